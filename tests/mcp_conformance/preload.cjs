// Node preload (`node --require preload.cjs`, or NODE_OPTIONS): gives an MCP client that cannot
// send credentials itself -- the conformance suite in server mode, the Inspector CLI -- the
// agentguard key of the server under test.
//
//   AGENTGUARD_MCP_ORIGIN    the server's origin (http://127.0.0.1:PORT): only requests to it
//                            carry the key, nothing else does.
//   AGENTGUARD_MCP_KEY       the access key.
//   AGENTGUARD_MCP_DPOP_PEM  optional PKCS#8 PEM of the key's DPoP key (ES256 or Ed25519): the
//                            key is then sent as "Authorization: DPoP" with a fresh proof per
//                            request (RFC 9449: htm, htu, iat, jti, ath; the server's nonce once
//                            it asks for one, one retry on use_dpop_nonce).
//
// The headers are added below the caller: the suite records the headers it passes to fetch in
// its checks.json, and those never contain the key. Covers global fetch (the MCP SDK clients,
// the suite's raw SSE requests) and undici.request (the suite's DNS-rebinding probe).
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");
const { createRequire } = require("node:module");

const ORIGIN = process.env.AGENTGUARD_MCP_ORIGIN;
const KEY = process.env.AGENTGUARD_MCP_KEY;
const PEM = process.env.AGENTGUARD_MCP_DPOP_PEM;

function b64url(data) {
  return Buffer.from(data).toString("base64url");
}

function dpopSigner(pem) {
  const privateKey = crypto.createPrivateKey(pem);
  const jwk = crypto.createPublicKey(privateKey).export({ format: "jwk" });
  const isEc = privateKey.asymmetricKeyType === "ec";
  const alg = isEc ? "ES256" : "EdDSA";
  const header = b64url(JSON.stringify({ typ: "dpop+jwt", alg, jwk }));
  const ath = b64url(crypto.createHash("sha256").update(KEY, "ascii").digest());
  return (method, url, nonce) => {
    const target = new URL(url);
    const claims = {
      jti: crypto.randomUUID(),
      htm: method,
      htu: `${target.origin}${target.pathname}`,
      iat: Math.floor(Date.now() / 1000),
      ath,
    };
    if (nonce) claims.nonce = nonce;
    const input = `${header}.${b64url(JSON.stringify(claims))}`;
    const signature = isEc
      ? crypto.sign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" })
      : crypto.sign(null, Buffer.from(input), privateKey);
    return `${input}.${b64url(signature)}`;
  };
}

function install() {
  if (!ORIGIN || !KEY) return;
  const sign = PEM ? dpopSigner(PEM) : null;
  let nonce = null;

  const ours = (url) => {
    try {
      return new URL(url).origin === ORIGIN;
    } catch {
      return false;
    }
  };
  const credentials = (method, url) => {
    if (!sign) return { authorization: `Bearer ${KEY}` };
    return { authorization: `DPoP ${KEY}`, dpop: sign(method.toUpperCase(), url, nonce) };
  };
  const learn = (value) => {
    if (typeof value === "string" && value) nonce = value;
  };
  const asksForNonce = (status, challenge) =>
    sign !== null && status === 401 && /use_dpop_nonce/.test(challenge || "");

  const originalFetch = globalThis.fetch;
  globalThis.fetch = async function guardedFetch(input, init) {
    const url = typeof input === "string" || input instanceof URL ? String(input) : input.url;
    if (!ours(url)) return originalFetch(input, init);
    const method = (init && init.method) || (input instanceof Request ? input.method : "GET");
    const send = () => {
      const headers = new Headers(init && init.headers);
      for (const [name, value] of Object.entries(credentials(method, url))) {
        headers.set(name, value);
      }
      return originalFetch(input, { ...init, headers });
    };
    let response = await send();
    learn(response.headers.get("dpop-nonce"));
    const body = init && init.body;
    const replayable = body === undefined || body === null || typeof body === "string";
    if (replayable && asksForNonce(response.status, response.headers.get("www-authenticate"))) {
      response = await send();
      learn(response.headers.get("dpop-nonce"));
    }
    return response;
  };

  // undici.request, as the module that imports it will see it: patch the copy its require
  // resolves to before that module is loaded (ES modules bind CommonJS exports at import).
  let undici = null;
  try {
    const main = process.argv[1] ? path.resolve(process.argv[1]) : path.join(process.cwd(), "x");
    undici = createRequire(main)("undici");
  } catch {
    return;
  }
  const originalRequest = undici.request;
  undici.request = async function guardedRequest(url, options = {}) {
    const target = String(url);
    if (!ours(target)) return originalRequest.call(this, url, options);
    const method = options.method || "GET";
    const send = () => {
      const given = options.headers || {};
      const headers = {};
      const pairs = Array.isArray(given) ? given : Object.entries(given);
      for (let i = 0; i < pairs.length; i += 1) {
        // undici also takes a flat [name, value, name, value] array
        const [name, value] = Array.isArray(pairs[i]) ? pairs[i] : [pairs[i], pairs[++i]];
        headers[name] = value;
      }
      for (const name of Object.keys(headers)) {
        if (["authorization", "dpop"].includes(name.toLowerCase())) delete headers[name];
      }
      Object.assign(headers, credentials(method, target));
      return originalRequest.call(this, url, { ...options, headers });
    };
    let response = await send();
    learn(response.headers["dpop-nonce"]);
    if (asksForNonce(response.statusCode, response.headers["www-authenticate"])) {
      await response.body.dump();
      response = await send();
      learn(response.headers["dpop-nonce"]);
    }
    return response;
  };
}

install();
