// A real OpenID Connect provider on loopback for tests/web_console.rs: the npm
// `oidc-provider` package (authorization code flow, PKCE S256 required, RS256 ID tokens
// signed with its development key; its development login and consent pages accept any
// login name as the subject). Configured from the environment: OIDC_PORT, OIDC_REDIRECT,
// OIDC_CLIENT_SECRET. Prints "oidc ready <issuer>" when listening.
import { pathToFileURL } from "node:url";
import path from "node:path";

const nm = process.env.NODE_PATH.split(path.delimiter)[0];
const { default: Provider } = await import(pathToFileURL(path.join(nm, "oidc-provider/lib/index.js")).href);
const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: "branchrec-console",
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: [process.env.OIDC_REDIRECT],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  pkce: { required: () => true, methods: ["S256"] },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, name: `${sub} (IdP)` }),
  }),
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["branchrec-test-cookie-key-0123456789"] },
});
provider.on("server_error", (ctx, err) => console.error("oidc server_error", err));
provider.listen(port, "127.0.0.1", () => console.log(`oidc ready ${issuer}`));
