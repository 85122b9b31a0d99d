// The pushreach console: sign in, overview with charts, pushes (search, detail, cancel), SMS
// records, device lookup. Hash routes (#/pushes/ID) so the service serves one page.
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { html, render } from "htm/preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { api, ApiError } from "./api.js";
import { Chart } from "./chart.js";

const SMS_STATUSES = ["SENDING", "SENT", "DELIVERED", "UNDELIVERED", "FAILED", "RATE_LIMITED", "UNKNOWN"];
const RANGES = { "24h": [86400, "hour"], "7d": [7 * 86400, "hour"], "30d": [30 * 86400, "day"] };
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

const fmtTime = (t) => (t == null ? "" : new Date(t * 1000).toLocaleString());
const pct = (x) => `${(100 * x).toFixed(1)}%`;
const label = (s) => (s || "").toLowerCase().replace(/_/g, " ");

function useRoute() {
  const [hash, setHash] = useState(location.hash || "#/overview");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/overview");
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash.slice(2).split("/").map(decodeURIComponent);
}

function useLoad(load, deps) {
  const [state, setState] = useState({ loading: true });
  const run = useCallback(() => {
    setState((s) => ({ ...s, loading: true, error: null }));
    load().then((data) => setState({ data }), (error) => setState({ error }));
  }, deps);
  useEffect(run, [run]);
  return [state, run];
}

function Failure({ error }) {
  if (!error) return null;
  const where = error instanceof ApiError && error.field ? ` (${error.field})` : "";
  return html`<p class="error" role="alert" data-testid="error">${error.message}${where}</p>`;
}

function SignIn({ onSignedIn }) {
  const [mode, setMode] = useState("app");
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = mode === "app" ? { access_id: f.get("access_id"), secret_key: f.get("secret_key") } : { admin_token: f.get("admin_token") };
    try {
      onSignedIn(await api.signIn(body));
    } catch (err) {
      setError(err);
    }
  };
  return html`<main class="signin">
    <h1>pushreach</h1>
    <form onSubmit=${submit} class="card" data-testid="signin">
      <div class="tabs">
        <button type="button" class=${mode === "app" ? "on" : ""} onClick=${() => setMode("app")}>App</button>
        <button type="button" class=${mode === "admin" ? "on" : ""} onClick=${() => setMode("admin")}>Admin</button>
      </div>
      ${mode === "app"
        ? html`<label>Access ID<input name="access_id" autocomplete="username" required /></label>
            <label>Secret key<input name="secret_key" type="password" autocomplete="current-password" required /></label>`
        : html`<label>Admin token<input name="admin_token" type="password" required /></label>`}
      <button type="submit" class="primary">Sign in</button>
      <${Failure} error=${error} />
    </form>
  </main>`;
}

function Stat({ name, value, testid }) {
  return html`<div class="stat" data-testid=${testid}><span>${name}</span><strong>${value}</strong></div>`;
}

function Overview({ app }) {
  const [range, setRange] = useState("7d");
  const [seconds, interval] = RANGES[range];
  const [{ data, error }] = useLoad(() => {
    const end = Math.ceil(Date.now() / 1000);
    return api.overview(app, { start: end - seconds, end, interval, time_zone: zone });
  }, [app, range]);
  const s = data?.statistics;
  const times = data ? data.buckets.map((b) => b.start_time) : [];
  return html`<section>
    <header class="bar"><h2>Overview</h2>
      <div class="tabs" data-testid="ranges">${Object.keys(RANGES).map(
        (r) => html`<button class=${r === range ? "on" : ""} onClick=${() => setRange(r)}>${r}</button>`
      )}</div>
    </header>
    <${Failure} error=${error} />
    ${s && html`<div class="stats">
        <${Stat} name="Pushes" value=${s.push_count} testid="push_count" />
        <${Stat} name="Targets" value=${s.target_count} testid="target_count" />
        <${Stat} name="Arrival rate" value=${pct(s.arrival_rate)} testid="arrival_rate" />
        <${Stat} name="Click rate" value=${pct(s.click_rate)} testid="click_rate" />
        <${Stat} name="SMS sent" value=${s.sms.sent} testid="sms_sent" />
        <${Stat} name="SMS delivered" value=${s.sms.delivered} testid="sms_delivered" />
        <${Stat} name="SMS failed" value=${s.sms.failed} testid="sms_failed" />
        <${Stat} name="SMS rate-limited" value=${s.sms.rate_limited} testid="sms_rate_limited" />
        <${Stat} name="SMS unknown" value=${s.sms.unknown} testid="sms_unknown" />
        <${Stat} name="SMS pending" value=${s.sms.pending} testid="sms_pending" />
        <${Stat} name="SMS fee" value=${s.sms_fee} testid="sms_fee" />
        <${Stat} name="Pending fallbacks" value=${s.pending_fallback_count} testid="pending_fallback_count" />
      </div>
      <div class="charts">
        <${Chart} title=${`Pushes and targets per ${interval}`} testid="chart-pushes" times=${times}
          series=${[{ label: "pushes", values: data.buckets.map((b) => b.push_count) },
                    { label: "targets", values: data.buckets.map((b) => b.target_count) }]} />
        <${Chart} title=${`Arrivals and clicks per ${interval}`} testid="chart-reach" times=${times}
          series=${[{ label: "arrived", values: data.buckets.map((b) => b.arrived_count) },
                    { label: "clicked", values: data.buckets.map((b) => b.clicked_count) }]} />
        <${Chart} title=${`SMS per ${interval}`} testid="chart-sms" times=${times}
          series=${["sent", "failed", "rate_limited", "unknown"].map((k) => ({ label: label(k), values: data.buckets.map((b) => b.sms[k]) }))} />
      </div>`}
  </section>`;
}

function Pager({ token, onMore }) {
  return token ? html`<button class="more" data-testid="more" onClick=${onMore}>More</button>` : null;
}

function Pushes({ app }) {
  const [query, setQuery] = useState("");
  const [rows, setRows] = useState([]);
  const [next, setNext] = useState("");
  const [error, setError] = useState(null);
  const load = async (q, token) => {
    try {
      const page = await api.pushes(app, { query: q, page_token: token });
      setRows((r) => (token ? [...r, ...page.pushes] : page.pushes));
      setNext(page.next_page_token);
      setError(null);
    } catch (err) {
      setError(err);
    }
  };
  useEffect(() => void load(query, ""), [app]);
  return html`<section>
    <header class="bar"><h2>Pushes</h2>
      <form class="search" onSubmit=${(e) => { e.preventDefault(); load(query, ""); }}>
        <input type="search" placeholder="push id or title" value=${query} onInput=${(e) => setQuery(e.target.value)} data-testid="push-search" />
        <button type="submit">Search</button>
      </form>
    </header>
    <${Failure} error=${error} />
    <div class="scroll"><table data-testid="push-list">
      <thead><tr><th>Push</th><th>Title</th><th>Accepted</th><th>Targets</th><th>Fallback</th></tr></thead>
      <tbody>${rows.map((p) => html`<tr>
        <td><a href=${`#/pushes/${encodeURIComponent(p.push_id)}`}>${p.push_id}</a></td>
        <td>${p.title}</td><td>${fmtTime(p.accepted_at)}</td><td>${p.target_count}</td>
        <td>${label(p.fallback_state)}</td></tr>`)}</tbody>
    </table></div>
    ${rows.length === 0 && !error && html`<p class="muted">No push.</p>`}
    <${Pager} token=${next} onMore=${() => load(query, next)} />
  </section>`;
}

function PushPage({ app, pushId }) {
  const [token, setToken] = useState("");
  const [targets, setTargets] = useState([]);
  const [{ data, error }, reload] = useLoad(() => api.push(app, pushId, { page_token: token }), [app, pushId, token]);
  const [cancelError, setCancelError] = useState(null);
  useEffect(() => {
    if (data) setTargets((t) => (token ? [...t, ...data.targets] : data.targets));
  }, [data]);
  if (error) return html`<${Failure} error=${error} />`;
  if (!data) return html`<p class="muted">Loading…</p>`;
  const { push, funnel } = data;
  const cancel = async () => {
    try {
      await api.cancel(app, pushId);
      setToken("");
      reload();
    } catch (err) {
      setCancelError(err);
    }
  };
  const columns = ["token", "channel", "push_outcome", "phone_number", "arrive_time", "click_time", "sms_status"];
  return html`<section data-testid="push-page">
    <header class="bar"><h2>Push ${push.push_id}</h2><a href="#/pushes">All pushes</a></header>
    <div class="stats">
      <${Stat} name="Title" value=${push.title} testid="push-title" />
      <${Stat} name="Accepted" value=${fmtTime(push.accepted_at)} testid="push-accepted" />
      <${Stat} name="Fallback" value=${label(push.fallback_state)} testid="fallback-state" />
      ${push.fallback_due_at && html`<${Stat} name="Due" value=${fmtTime(push.fallback_due_at)} testid="fallback-due" />`}
    </div>
    ${push.fallback_state === "PENDING" &&
      html`<button class="danger" data-testid="cancel-fallback" onClick=${cancel}>Cancel the SMS fallback</button>`}
    <${Failure} error=${cancelError} />
    <h3>Funnel</h3>
    <div class="stats" data-testid="funnel">${Object.entries(funnel).map(
      ([k, v]) => html`<${Stat} name=${label(k.replace(/_count$/, ""))} value=${v} testid=${`funnel-${k}`} />`
    )}</div>
    <h3>Targets</h3>
    <div class="scroll"><table data-testid="targets">
      <thead><tr>${columns.map((c) => html`<th>${label(c)}</th>`)}</tr></thead>
      <tbody>${targets.map((t) => html`<tr>${columns.map((c) => html`<td>${
        c.endsWith("_time") ? fmtTime(t[c]) : c.endsWith("status") || c === "channel" || c === "push_outcome" ? label(t[c]) : t[c]
      }</td>`)}</tr>`)}</tbody>
    </table></div>
    <${Pager} token=${data.next_page_token} onMore=${() => setToken(data.next_page_token)} />
  </section>`;
}

function SmsRecords({ app }) {
  const [filters, setFilters] = useState({ push_id: "", phone_number: "", status: [], start: "", end: "" });
  const [rows, setRows] = useState([]);
  const [next, setNext] = useState("");
  const [error, setError] = useState(null);
  const toEpoch = (v) => (v ? Math.floor(new Date(v).getTime() / 1000) : "");
  const load = async (token) => {
    try {
      const page = await api.sms(app, { ...filters, start: toEpoch(filters.start), end: toEpoch(filters.end), page_token: token });
      setRows((r) => (token ? [...r, ...page.records] : page.records));
      setNext(page.next_page_token);
      setError(null);
    } catch (err) {
      setError(err);
    }
  };
  useEffect(() => void load(""), [app]);
  const set = (k) => (e) => setFilters({ ...filters, [k]: e.target.value });
  const toggle = (s) => setFilters({ ...filters, status: filters.status.includes(s) ? filters.status.filter((x) => x !== s) : [...filters.status, s] });
  return html`<section>
    <header class="bar"><h2>SMS records</h2></header>
    <form class="filters card" onSubmit=${(e) => { e.preventDefault(); load(""); }} data-testid="sms-filters">
      <label>Push id<input value=${filters.push_id} onInput=${set("push_id")} /></label>
      <label>Phone<input value=${filters.phone_number} onInput=${set("phone_number")} placeholder="+8613800138000" /></label>
      <label>From<input type="datetime-local" value=${filters.start} onInput=${set("start")} /></label>
      <label>To<input type="datetime-local" value=${filters.end} onInput=${set("end")} /></label>
      <fieldset><legend>Status</legend>${SMS_STATUSES.map((s) => html`<label class="check">
        <input type="checkbox" checked=${filters.status.includes(s)} onChange=${() => toggle(s)} />${label(s)}</label>`)}</fieldset>
      <button type="submit">Filter</button>
    </form>
    <${Failure} error=${error} />
    <div class="scroll"><table data-testid="sms-list">
      <thead><tr><th>Created</th><th>Push</th><th>Phone</th><th>Status</th><th>Template</th><th>Code</th><th>Fee</th></tr></thead>
      <tbody>${rows.map((r) => html`<tr>
        <td>${fmtTime(r.created_at)}</td><td><a href=${`#/pushes/${encodeURIComponent(r.push_id)}`}>${r.push_id}</a></td>
        <td>${r.phone_number}</td><td>${label(r.status)}${r.rate_limit_rule ? ` (${r.rate_limit_rule})` : ""}</td>
        <td>${r.sms_template_id}</td><td>${r.provider_code}</td><td>${r.fee}</td></tr>`)}</tbody>
    </table></div>
    ${rows.length === 0 && !error && html`<p class="muted">No SMS record.</p>`}
    <${Pager} token=${next} onMore=${() => load(next)} />
  </section>`;
}

function Devices({ app }) {
  const [token, setToken] = useState("");
  const [device, setDevice] = useState(null);
  const [error, setError] = useState(null);
  const look = async (e) => {
    e.preventDefault();
    try {
      setDevice((await api.device(app, token)).device);
      setError(null);
    } catch (err) {
      setDevice(null);
      setError(err);
    }
  };
  return html`<section>
    <header class="bar"><h2>Device lookup</h2></header>
    <form class="search" onSubmit=${look}><input value=${token} onInput=${(e) => setToken(e.target.value)} placeholder="device token" data-testid="device-token" />
      <button type="submit">Look up</button></form>
    <${Failure} error=${error} />
    ${device && html`<dl class="card device" data-testid="device">${Object.entries(device).map(
      ([k, v]) => html`<dt>${label(k)}</dt><dd>${Array.isArray(v) ? v.join(", ") : k.endsWith("_at") || k.endsWith("_time") ? fmtTime(v) : String(v ?? "")}</dd>`
    )}</dl>`}
  </section>`;
}

function Shell({ session, onSignOut }) {
  const route = useRoute();
  const [apps, setApps] = useState([]);
  const [chosen, setChosen] = useState(session.access_id || "");
  useEffect(() => {
    if (session.kind === "admin") api.apps().then((r) => { setApps(r.apps); if (!chosen && r.apps.length) setChosen(r.apps[0].access_id); });
  }, [session]);
  const app = session.kind === "admin" ? chosen : "";
  const page = route[0];
  const nav = [["overview", "Overview"], ["pushes", "Pushes"], ["sms", "SMS"], ["devices", "Devices"]];
  let body;
  if (session.kind === "admin" && !chosen) body = html`<p class="muted">No app yet: create one with <code>pushreach apps create</code>.</p>`;
  else if (page === "pushes" && route[1]) body = html`<${PushPage} key=${route[1]} app=${app} pushId=${route[1]} />`;
  else if (page === "pushes") body = html`<${Pushes} key=${app} app=${app} />`;
  else if (page === "sms") body = html`<${SmsRecords} key=${app} app=${app} />`;
  else if (page === "devices") body = html`<${Devices} key=${app} app=${app} />`;
  else body = html`<${Overview} key=${app} app=${app} />`;
  return html`<div class="shell">
    <nav class="top">
      <strong>pushreach</strong>
      ${nav.map(([k, t]) => html`<a href=${`#/${k}`} class=${page === k ? "on" : ""}>${t}</a>`)}
      <span class="grow"></span>
      ${session.kind === "admin"
        ? html`<select data-testid="app-chooser" value=${chosen} onChange=${(e) => setChosen(e.target.value)}>${apps.map(
            (a) => html`<option value=${a.access_id}>${a.name} (${a.access_id})</option>`)}</select>`
        : html`<span class="who" data-testid="who">${session.name} (${session.access_id})</span>`}
      <button data-testid="sign-out" onClick=${onSignOut}>Sign out</button>
    </nav>
    <main>${body}</main>
  </div>`;
}

function App() {
  const [session, setSession] = useState(undefined);
  useEffect(() => { api.session().then(setSession, () => setSession(null)); }, []);
  if (session === undefined) return html`<p class="muted">Loading…</p>`;
  if (session === null) return html`<${SignIn} onSignedIn=${setSession} />`;
  const signOut = async () => {
    await api.signOut().catch(() => {});
    setSession(null);
  };
  return html`<${Shell} session=${session} onSignOut=${signOut} />`;
}

render(html`<${App} />`, document.getElementById("app"));
