// Certificates: the list (names, expiry, fingerprint) and the form.  The
// private key is write-only: the admin never sends it back, so the form
// leaves the key empty when editing, and an empty key keeps the stored one.

import { resources } from "../api.js";
import { h, mount, badge, DASH } from "../dom.js";
import { inputField, textareaField, section, readText, readList, assign } from "../forms.js";
import { pageHeader, loading, errorState, linkButton, emptyState, resourceTable, formPage } from "./common.js";

const DAY = 86400;

/** Days left until a certificate expires, as a badge: red once expired, amber within 30 days. */
export function expiryBadge(certificate, now = Date.now() / 1000) {
  if (typeof certificate.expiresAt !== "number") return badge(DASH, "muted");
  const left = certificate.expiresAt - now;
  const date = certificate.notAfter ? certificate.notAfter.slice(0, 10) : "";
  if (left <= 0) return badge(`expired ${date}`, "bad", `expired on ${certificate.notAfter}`);
  const days = Math.floor(left / DAY);
  const text = days === 0 ? `today (${date})` : `in ${days} day${days === 1 ? "" : "s"} (${date})`;
  return badge(text, days < 30 ? "warn" : "ok", `valid until ${certificate.notAfter}`);
}

function names(list) {
  if (!list || !list.length) return h("span", { class: "muted" }, DASH);
  return h("span", { class: "chips" }, list.map((n) => h("span", { class: "chip chip-plain" }, n)));
}

export async function renderCertificateList(outlet) {
  const header = pageHeader("Certificates", {
    subtitle: "TLS certificates the proxy serves by SNI, or presents to backends. Private keys are never shown.",
    actions: [linkButton("New certificate", "#/certificates/new", "btn-primary")],
  });
  mount(outlet, header, loading());
  let certificates;
  let servers;
  try {
    [certificates, servers] = await Promise.all([resources.list("certificates"), resources.list("servers")]);
  } catch (e) {
    mount(outlet, header, errorState(e, () => renderCertificateList(outlet)));
    return;
  }
  if (!certificates.length) {
    mount(outlet, header, emptyState("No certificates yet. A certificate (PEM chain and key) is served to the TLS clients that ask for one of its names.", "Add a certificate", "#/certificates/new"));
    return;
  }
  const usedBy = (name) => servers.filter((s) => s.tls && s.tls.clientCertificate === name).map((s) => s.name);
  mount(
    outlet,
    header,
    resourceTable({
      kind: "certificates",
      items: certificates,
      columns: [
        { label: "Name", cell: (c) => h("a", { class: "strong", href: `#/certificates/${encodeURIComponent(c.name)}/edit` }, c.name) },
        { label: "SNIs", cell: (c) => names(c.snis) },
        { label: "Subject", cell: (c) => h("span", { title: `issuer: ${c.issuer || DASH}` }, c.subject || DASH) },
        { label: "Names (SANs)", cell: (c) => names(c.sans) },
        { label: "Expires", cell: (c) => h("span", { class: "expiry" }, expiryBadge(c)) },
        { label: "Fingerprint (SHA-256)", cell: (c) => h("code", { class: "fingerprint", title: c.fingerprint || "" }, c.fingerprint ? `${c.fingerprint.slice(0, 23)}\u2026` : DASH) },
        {
          label: "Client certificate of",
          cell: (c) => {
            const users = usedBy(c.name);
            if (!users.length) return h("span", { class: "muted" }, DASH);
            return h("span", { class: "chips" }, users.map((n) => h("a", { class: "chip chip-plain", href: `#/servers/${encodeURIComponent(n)}` }, n)));
          },
        },
      ],
    }),
  );
}

export function renderCertificateForm(outlet, params) {
  return formPage({
    outlet,
    kind: "certificates",
    name: params.name,
    description: "A PEM certificate chain and its private key, served to TLS clients asking for one of its SNIs.",
    build(item) {
      const editing = !!item;
      const name = inputField({ label: "Name", field: "name", value: item?.name, required: true, disabled: editing, help: editing ? "The name cannot change." : "Letters, digits, - _ and ." });
      const snis = inputField({
        label: "SNIs",
        field: "snis",
        value: (item?.snis || []).join(", "),
        wide: true,
        placeholder: "api.example.com, *.example.org",
        help: "Server names it is served for, comma separated: exact names first, then *. wildcards (one label).",
      });
      const cert = textareaField({
        label: "Certificate chain (PEM)",
        field: "cert",
        value: item?.cert,
        rows: 8,
        placeholder: "-----BEGIN CERTIFICATE-----",
        help: "The certificate first, then the intermediates that sign it.",
      });
      const key = textareaField({
        label: "Private key (PEM)",
        field: "key",
        value: "",
        rows: 6,
        placeholder: editing ? "(stored; write-only)" : "-----BEGIN PRIVATE KEY-----",
        help: editing
          ? "Write-only: the stored key is never shown. Leave empty to keep it (a renewed certificate of the same key)."
          : "Unencrypted. Write-only: the gateway keeps it and never shows it again.",
      });
      const info = editing
        ? section(
            "Current certificate",
            null,
            h(
              "dl",
              { class: "props field-wide" },
              [
                ["Subject", item.subject],
                ["Issuer", item.issuer],
                ["Names", (item.sans || []).join(", ")],
                ["Valid from", item.notBefore],
                ["Valid until", item.notAfter],
                ["Fingerprint", item.fingerprint],
              ].map(([k, v]) => [h("dt", null, k), h("dd", null, v || DASH)]),
              h("dt", null, "Expires"),
              h("dd", null, expiryBadge(item)),
            ),
          )
        : null;
      const fields = [section("Certificate", null, name.el, snis.el, cert.el, key.el), info];
      const collect = () => {
        const out = {};
        assign(out, "name", readText(name.input));
        assign(out, "cert", readText(cert.input) && cert.input.value);
        assign(out, "key", readText(key.input) && key.input.value);
        out.snis = readList(snis.input);
        return out;
      };
      return { fields, collect };
    },
  });
}
