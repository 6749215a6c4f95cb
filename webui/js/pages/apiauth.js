// The authentication and ACL settings of the API form: an API's `auth`
// (methods in order, where keys are looked for, the anonymous consumer,
// hideCredentials, JWT settings) and `acl` (allow and deny groups).

import { h } from "../dom.js";
import { inputField, numberField, checkboxField, optionalSection, readText, readNumber, readList, assign } from "../forms.js";
import { clone } from "./common.js";

const METHODS = [
  ["key", "API key"],
  ["jwt", "JWT (Bearer)"],
  ["basic", "Basic (user name and password)"],
];

/**
 * The auth and acl sections of an API form.
 * @returns {{els: HTMLElement[], collect: (out: object) => void}}
 */
export function authSections(item) {
  const auth = item?.auth || { methods: ["key"], keyNames: ["header:apikey", "query:apikey"], anonymous: null, hideCredentials: true, jwt: null };
  const methods = METHODS.map(([value, label], i) => checkboxField({ label, field: `auth.methods[${i}]`, checked: (auth.methods || []).includes(value) }));
  const order = inputField({
    label: "Order",
    field: "auth.methods",
    value: (auth.methods || []).join(", "),
    help: "The methods in the order they are tried (the first that finds a credential decides), e.g. key, jwt, basic.",
    wide: true,
  });
  // The checkboxes and the order line stay in step.
  methods.forEach((m, i) =>
    m.input.addEventListener("change", () => {
      const listed = readList(order.input).filter((v) => v !== METHODS[i][0]);
      if (m.input.checked) listed.push(METHODS[i][0]);
      order.input.value = listed.join(", ");
    }),
  );
  const keyNames = inputField({ label: "Key names", field: "auth.keyNames", value: (auth.keyNames || []).join(", "), help: "header:NAME or query:NAME, in order.", wide: true });
  const anonymous = inputField({ label: "Anonymous consumer", field: "auth.anonymous", value: auth.anonymous, help: "The consumer a request without credential acts as; empty: 401." });
  const hide = checkboxField({ label: "Hide credentials from the backend", field: "auth.hideCredentials", checked: auth.hideCredentials !== false });
  const jwt = auth.jwt || {};
  const jwksUrl = inputField({ label: "JWKS URL", field: "auth.jwt.jwksUrl", value: jwt.jwksUrl, placeholder: "https://id.example.com/.well-known/jwks.json", wide: true });
  const issuer = inputField({ label: "Issuer", field: "auth.jwt.issuer", value: jwt.issuer, help: "The iss every token must carry (optional)." });
  const audiences = inputField({ label: "Audiences", field: "auth.jwt.audiences", value: (jwt.audiences || []).join(", "), help: "A token's aud must name one (optional)." });
  const claim = inputField({ label: "Consumer claim", field: "auth.jwt.consumerClaim", value: jwt.consumerClaim || "sub" });
  const leeway = numberField({ label: "Leeway (s)", field: "auth.jwt.leeway", value: jwt.leeway ?? 30 });
  const authSection = optionalSection({
    title: "Authentication",
    field: "auth",
    enabled: !!item?.auth,
    description: "Who may call: 401 without a credential (unless an anonymous consumer is named), 401 for a bad one. The backend gets X-Consumer-Name, -Id and -Groups.",
    children: [
      h("div", { class: "field field-wide" }, h("span", { class: "help" }, "Methods"), h("div", { class: "check-grid" }, methods.map((m) => m.el))),
      order.el,
      keyNames.el,
      anonymous.el,
      hide.el,
      h("p", { class: "help field-wide" }, "JWT: tokens of consumers' JWT credentials, or of an OpenID Connect provider's JWKS."),
      jwksUrl.el,
      issuer.el,
      audiences.el,
      claim.el,
      leeway.el,
    ],
  });
  const acl = item?.acl || { allow: [], deny: [] };
  const allow = inputField({ label: "Allow groups", field: "acl.allow", value: (acl.allow || []).join(", "), help: "Empty: every consumer not denied." });
  const deny = inputField({ label: "Deny groups", field: "acl.deny", value: (acl.deny || []).join(", "), help: "Deny wins." });
  const aclSection = optionalSection({ title: "ACL", field: "acl", enabled: !!item?.acl, description: "Which consumers' groups may call (403 otherwise); needs authentication.", children: [allow.el, deny.el] });

  const collect = (out) => {
    if (authSection.enabled) {
      const v = clone(item?.auth);
      v.methods = readList(order.input);
      v.keyNames = readList(keyNames.input);
      v.anonymous = readText(anonymous.input) ?? null;
      v.hideCredentials = hide.input.checked;
      const jwtOut = clone(item?.auth?.jwt);
      assign(jwtOut, "jwksUrl", readText(jwksUrl.input));
      assign(jwtOut, "issuer", readText(issuer.input));
      jwtOut.audiences = readList(audiences.input);
      assign(jwtOut, "consumerClaim", readText(claim.input));
      assign(jwtOut, "leeway", readNumber(leeway.input));
      const jwtSet = jwtOut.jwksUrl || jwtOut.issuer || jwtOut.audiences.length || item?.auth?.jwt;
      v.jwt = jwtSet && v.methods.includes("jwt") ? jwtOut : null;
      out.auth = v;
    } else {
      out.auth = null;
    }
    out.acl = aclSection.enabled ? { ...clone(item?.acl), allow: readList(allow.input), deny: readList(deny.input) } : null;
  };
  return { els: [authSection.el, aclSection.el], collect, enabled: () => authSection.enabled || aclSection.enabled };
}
