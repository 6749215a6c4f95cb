// Consumers: the list, the form (groups, credentials added and revoked),
// and the page that shows a new credential's secret, once.

import { resources } from "../api.js";
import { h, mount, uniqueId, DASH } from "../dom.js";
import { inputField, selectField, textareaField, section, readText, readList, assign } from "../forms.js";
import { pageHeader, loading, errorState, linkButton, emptyState, resourceTable, formPage, clone, chips } from "./common.js";

const TYPES = [
  ["key", "API key"],
  ["basic", "User name and password"],
  ["jwt", "JWT (a secret or a public key)"],
];

const ALGORITHMS = ["HS256", "RS256", "ES256", "EdDSA"];

/** The secrets of the credentials just saved, shown once by renderConsumerCreated. */
let justCreated = null;

/** A random secret: 24 bytes as 48 hex digits (the browser's CSPRNG). */
export function randomSecret() {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function describe(c) {
  const what = c.type === "key" ? "key" : c.type === "basic" ? `basic ${c.username || ""}` : `jwt ${c.issuer || c.algorithm || ""}`;
  return `${what.trim()} \u00B7 ${c.id || DASH}`;
}

export async function renderConsumerList(outlet) {
  const header = pageHeader("Consumers", {
    subtitle: "Who calls the APIs: their groups and credentials (keys, passwords, JWT keys).",
    actions: [linkButton("New consumer", "#/consumers/new", "btn-primary")],
  });
  mount(outlet, header, loading());
  let consumers;
  try {
    consumers = await resources.list("consumers");
  } catch (e) {
    mount(outlet, header, errorState(e, () => renderConsumerList(outlet)));
    return;
  }
  if (!consumers.length) {
    mount(outlet, header, emptyState("No consumers yet. A consumer is who calls an API that has auth.", "Create a consumer", "#/consumers/new"));
    return;
  }
  mount(
    outlet,
    header,
    resourceTable({
      kind: "consumers",
      items: consumers,
      columns: [
        { label: "Name", cell: (c) => h("a", { class: "strong", href: `#/consumers/${encodeURIComponent(c.name)}/edit` }, c.name) },
        { label: "Custom id", cell: (c) => c.customId || DASH },
        { label: "Groups", cell: (c) => chips(c.groups, () => "#/consumers") },
        {
          label: "Credentials",
          cell: (c) =>
            c.credentials && c.credentials.length
              ? h("span", { class: "chips" }, c.credentials.map((cr) => h("span", { class: "chip chip-plain", title: `fingerprint ${cr.fingerprint || DASH}` }, describe(cr))))
              : h("span", { class: "muted" }, "none"),
        },
      ],
    }),
  );
}

/** One row of the credentials table: what the admin shows of it, and Revoke. */
function credentialRow(credential, { onRevoke, isNew }) {
  const details = [];
  if (credential.username) details.push(`user ${credential.username}`);
  if (credential.issuer) details.push(`issuer ${credential.issuer}`);
  if (credential.algorithm) details.push(credential.algorithm);
  const tr = h(
    "tr",
    { class: "credential", dataset: { type: credential.type, id: credential.id || "" } },
    h("td", null, TYPES.find(([t]) => t === credential.type)?.[1] || credential.type),
    h("td", null, credential.id || h("span", { class: "muted" }, "given when saved")),
    h("td", null, details.join(", ") || DASH),
    h("td", { class: "mono" }, isNew ? h("span", { class: "chip chip-warn" }, "new, unsaved") : credential.fingerprint || DASH),
    h("td", { class: "row-actions" }, h("button", { type: "button", class: "btn btn-small btn-ghost-danger", "aria-label": `Revoke credential ${credential.id || credential.type}`, onClick: () => onRevoke() }, "Revoke")),
  );
  return tr;
}

export function renderConsumerForm(outlet, params) {
  return formPage({
    outlet,
    kind: "consumers",
    name: params.name,
    description: "A consumer's groups decide what its ACLs allow; its credentials say who it is. Secrets are shown once, when created.",
    after: (saved) => {
      if (justCreated && justCreated.secrets.length) {
        justCreated.name = saved.name;
        justCreated.saved = saved;
        return `#/consumers/${encodeURIComponent(saved.name)}/created`;
      }
      justCreated = null;
      return "#/consumers";
    },
    build(item) {
      const editing = !!item;
      const name = inputField({ label: "Name", field: "name", value: item?.name, required: true, disabled: editing, help: editing ? "The name cannot change." : "Letters, digits, - _ and ." });
      const customId = inputField({ label: "Custom id", field: "customId", value: item?.customId, help: "Its id in your own systems (X-Consumer-Id). Optional." });
      const groups = inputField({ label: "Groups", field: "groups", value: (item?.groups || []).join(", "), help: "Comma-separated; what an API's acl allows or denies.", wide: true });

      // Stored credentials are kept as the admin showed them (no secret: the
      // admin keeps each stored one); new ones carry their secret.
      const kept = (item?.credentials || []).map((c) => ({ credential: c, isNew: false, secret: null }));
      const added = [];
      const tbody = h("tbody");
      const errId = uniqueId("err");
      const table = h(
        "table",
        { class: "table credentials", dataset: { field: "credentials", errorScope: "" }, "aria-describedby": errId },
        h("thead", null, h("tr", null, ["Type", "Id", "Details", "Fingerprint"].map((t) => h("th", { scope: "col" }, t)), h("th", { scope: "col", class: "row-actions" }, h("span", { class: "sr-only" }, "Actions")))),
        tbody,
      );
      const empty = h("p", { class: "muted" }, "No credentials: this consumer can only be used as an API's anonymous consumer.");
      const redraw = () => {
        const all = [...kept, ...added];
        tbody.replaceChildren(
          ...all.map((entry) =>
            credentialRow(entry.credential, {
              isNew: entry.isNew,
              onRevoke: () => {
                const list = entry.isNew ? added : kept;
                list.splice(list.indexOf(entry), 1);
                redraw();
              },
            }),
          ),
        );
        table.hidden = all.length === 0;
        empty.hidden = all.length !== 0;
      };

      // Adding a credential.
      const type = selectField({ label: "Type", field: "", value: "key", options: TYPES });
      const key = inputField({ label: "API key", field: "", value: "", help: "16 characters or more; Generate makes a random one.", wide: true });
      const username = inputField({ label: "User name", field: "" });
      const password = inputField({ label: "Password", field: "", help: "At most 72 bytes." });
      const issuer = inputField({ label: "Issuer (iss)", field: "" });
      const algorithm = selectField({ label: "Algorithm", field: "", value: "HS256", options: ALGORITHMS });
      const secret = inputField({ label: "Secret (HS256)", field: "", help: "32 characters or more.", wide: true });
      const publicKey = textareaField({ label: "Public key (PEM, RS256/ES256/EdDSA)", field: "", rows: 4 });
      const generate = (input) => h("button", { type: "button", class: "btn btn-small", onClick: () => { input.value = randomSecret(); } }, "Generate");
      const groupsOf = {
        key: h("div", { class: "credential-fields" }, key.el, generate(key.input)),
        basic: h("div", { class: "credential-fields" }, username.el, password.el, generate(password.input)),
        jwt: h("div", { class: "credential-fields" }, issuer.el, algorithm.el, secret.el, generate(secret.input), publicKey.el),
      };
      const showType = () => {
        for (const [t, el] of Object.entries(groupsOf)) el.hidden = t !== type.input.value;
      };
      type.input.addEventListener("change", showType);
      const addError = h("p", { class: "field-error", role: "alert", hidden: true });
      const addButton = h(
        "button",
        {
          type: "button",
          class: "btn",
          onClick: () => {
            const t = type.input.value;
            let credential;
            let shown = null;
            if (t === "key") {
              const value = key.input.value.trim();
              if (!value) return fail("Give the key, or Generate one.");
              credential = { type: "key", key: value };
              shown = ["API key", value];
              key.input.value = "";
            } else if (t === "basic") {
              const user = username.input.value.trim();
              if (!user || !password.input.value) return fail("Give a user name and a password.");
              credential = { type: "basic", username: user, password: password.input.value };
              shown = [`password of ${user}`, password.input.value];
              username.input.value = "";
              password.input.value = "";
            } else {
              const alg = algorithm.input.value;
              credential = { type: "jwt", algorithm: alg };
              const iss = issuer.input.value.trim();
              if (iss) credential.issuer = iss;
              if (alg === "HS256") {
                if (!secret.input.value) return fail("Give the HS256 secret, or Generate one.");
                credential.secret = secret.input.value;
                shown = [`HS256 secret${iss ? ` of ${iss}` : ""}`, secret.input.value];
              } else {
                if (!publicKey.input.value.trim()) return fail(`Give the ${alg} public key (PEM).`);
                credential.publicKey = publicKey.input.value;
              }
              secret.input.value = "";
              publicKey.input.value = "";
              issuer.input.value = "";
            }
            addError.hidden = true;
            added.push({ credential, isNew: true, secret: shown });
            redraw();
            return undefined;
          },
        },
        "Add credential",
      );
      function fail(message) {
        addError.textContent = message;
        addError.hidden = false;
      }
      const adder = h("div", { class: "card credential-adder" }, h("h3", null, "Add a credential"), type.el, ...Object.values(groupsOf), addError, addButton);
      showType();
      redraw();
      const fields = [
        section("Consumer", null, name.el, customId.el, groups.el),
        section(
          "Credentials",
          "Revoke removes a credential when you save. A new secret is shown once, after saving; the gateway keeps only what verifies it.",
          h("div", { class: "credentials-block" }, h("div", { class: "table-scroll" }, table), empty, h("p", { class: "field-error", id: errId, hidden: true }), adder),
        ),
      ];
      const collect = () => {
        const out = clone(item);
        assign(out, "name", readText(name.input));
        assign(out, "customId", readText(customId.input));
        out.groups = readList(groups.input);
        const all = [...kept, ...added];
        out.credentials = all.map((entry) => entry.credential);
        justCreated = { secrets: added.filter((e) => e.secret).map((e) => ({ what: e.secret[0], value: e.secret[1], credential: e.credential })) };
        return out;
      };
      return { fields, collect };
    },
  });
}

/** After saving: each new secret, once; it is gone from the page's memory after. */
export function renderConsumerCreated(outlet, params) {
  const shown = justCreated && justCreated.name === params.name ? justCreated : null;
  justCreated = null;
  const header = pageHeader(`Consumer ${params.name} saved`, { crumbs: [["Consumers", "#/consumers"]] });
  if (!shown) {
    mount(outlet, header, h("div", { class: "card" }, h("p", null, "Secrets are shown only once, right after they are saved. Add a new credential to get a new one."), linkButton("Back to consumers", "#/consumers", "btn-primary")));
    return;
  }
  const rows = shown.secrets.map((s) => {
    const value = h("code", { class: "secret-value mono" }, s.value);
    const copy = h("button", { type: "button", class: "btn btn-small", onClick: () => navigator.clipboard?.writeText(s.value) }, "Copy");
    return h("tr", null, h("th", { scope: "row" }, s.what), h("td", null, value), h("td", null, copy));
  });
  mount(
    outlet,
    header,
    h(
      "div",
      { class: "card secret-once", role: "alert" },
      h("p", { class: "strong" }, "Copy these secrets now: the gateway keeps only what verifies them and will never show them again."),
      h("table", { class: "table" }, h("tbody", null, rows)),
      linkButton("Done", "#/consumers", "btn-primary"),
    ),
  );
}

