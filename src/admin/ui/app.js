// The sluice console: a client of the public admin API (/admin/v1/), nothing else.
// The admin token lives in this tab's session storage and goes out as a bearer header;
// there are no cookies. Pages refresh themselves at most once a second.
import { html, render, useState, useEffect, useRef } from './vendor/preact-htm.mjs';
import { pretty, lineDiff, trimmed } from './diff.js';
import { LineChart, Legend } from './charts.js';

const TOKEN_KEY = 'sluice.admin.token';
const READ_ONLY = 'This token may only read: sign in with a write token to change anything.';

// ---- the API ----

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `the admin API answered ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.problems = body?.error?.problems || [];
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);
let onSignedOut = () => {};

async function api(method, path, { body, ifMatch } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (ifMatch !== undefined && ifMatch !== null) headers['If-Match'] = `"${ifMatch}"`;
  const resp = await fetch(`/admin/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  let json = null;
  try {
    json = await resp.json();
  } catch {
    json = null;
  }
  if (resp.status === 401) onSignedOut();
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

const enc = encodeURIComponent;

// ---- formatting ----

const pct = (x, digits = 1) => (x === null || x === undefined ? '—' : `${(x * 100).toFixed(digits)} %`);
const ms = (x) => (x === null || x === undefined ? '—' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(x < 10 ? 1 : 0)} ms`);
const num = (x, digits = 3) => (x === null || x === undefined ? '—' : Number(x.toPrecision(digits)).toString());
const int = (x) => (x === null || x === undefined ? '—' : x.toLocaleString('en-US'));
const usd = (x) => (x ? `$${x < 0.01 ? x.toFixed(5) : x.toFixed(2)}` : '$0');

function ago(time) {
  if (!time) return '';
  const s = Math.round((Date.now() - Date.parse(time)) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** The fallthrough as [{variation, percent}]. */
function split(fallthrough) {
  if (!fallthrough) return [];
  if (fallthrough.variation !== undefined) return [{ variation: fallthrough.variation, percent: 100 }];
  return (fallthrough.rollout?.variations || []).map((w) => ({ variation: w.variation, percent: w.percent ?? 0 }));
}

function serving(flag) {
  if (!flag.on) return `off · serves ${flag.off_variation ?? 'its off variation'}`;
  const parts = split(flag.fallthrough).filter((w) => w.percent > 0);
  return parts.map((w) => `${num(w.percent, 4)} % ${w.variation}`).join(' · ');
}

/** The guard's badge: its state, or what keeps it from deciding, and its ramp step. */
function guardBadge(g) {
  if (!g) return null;
  let text = g.state.replace('_', ' ');
  let kind = g.state;
  if (g.state === 'armed') {
    if (g.metrics.some((m) => m.decision === 'trip')) [text, kind] = ['tripped', 'tripped'];
    else if (!g.checked_at || g.health.length || g.metrics.some((m) => m.decision === 'insufficient'))
      [text, kind] = ['insufficient data', 'insufficient'];
  }
  if (g.step !== null && g.step !== undefined && g.steps) text += ` · ramp step ${g.step + 1} of ${g.steps}`;
  return html`<span class="badge guard-${kind}" data-guard=${kind}>${text}</span>`;
}

function experimentBadge(e) {
  if (!e) return null;
  const r = e.recommendation;
  const text = r.action === 'ship' ? `ship ${r.variation}` : r.action.replace('_', ' ');
  return html`<span class="badge exp-${r.action}" title=${r.reason}>${text}</span>`;
}

// ---- small pieces ----

function Problem({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <strong>${error.status ? `${error.status} ${error.code || ''}` : 'Error'}</strong> ${error.message}
    ${error.problems?.length ? html`<ul>${error.problems.map((p) => html`<li><code>${p.path}</code>: ${p.message}</li>`)}</ul>` : null}
  </div>`;
}

function Diff({ before, after }) {
  const lines = trimmed(lineDiff(pretty(before), pretty(after)));
  // One block per line (htm drops whitespace-only text, so no newline characters).
  return html`<pre class="diff">${lines.map(([op, text]) => html`<span class=${op === '+' ? 'add' : op === '-' ? 'del' : op === '…' ? 'gap' : 'same'}>${op} ${text}</span>`)}</pre>`;
}

function WriteButton({ who, onClick, children, kind = '', name }) {
  const readOnly = who.role !== 'write';
  return html`<button class=${kind} data-action=${name} disabled=${readOnly} title=${readOnly ? READ_ONLY : ''} onClick=${onClick}>${children}</button>`;
}

/** Call `load` now, then again each `every` ms (never two at once), while mounted. */
function usePoll(load, deps, every = 1000) {
  useEffect(() => {
    let stopped = false;
    let timer;
    const run = async () => {
      try {
        await load();
      } catch (e) {
        if (!(e instanceof ApiError)) console.warn(e);
      }
      if (!stopped) timer = setTimeout(run, every);
    };
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, deps);
}

// ---- the review step: every change goes through it ----

/**
 * A change as the admin API takes it: {title, method, path, body, revision, flag}.
 * The server checks it first (`?dry_run=true`) and shows what it would change; the change
 * is sent, with `If-Match`, only when the user gives a reason and confirms.
 */
function Review({ change, onDone, onCancel, onReload }) {
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState(null);
  const [conflict, setConflict] = useState(null);
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);

  const showConflict = async () => {
    let last = null;
    try {
      const q = change.flag ? `?flag=${enc(change.flag)}&limit=1` : '?limit=1';
      last = (await api('GET', `/audit${q}`)).entries[0] || null;
    } catch {
      last = null;
    }
    setConflict({ last });
  };

  useEffect(() => {
    api(change.method, `${change.path}?dry_run=true`, {
      body: { ...change.body, reason: '(preview)' },
      ifMatch: change.revision,
    })
      .then(setPreview)
      .catch((e) => (e.status === 412 ? showConflict() : setError(e)));
  }, []);

  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      const applied = await api(change.method, change.path, {
        body: { ...change.body, reason: reason.trim() },
        ifMatch: change.revision,
      });
      onDone(applied);
    } catch (e) {
      if (e.status === 412) await showConflict();
      else setError(e);
    } finally {
      setBusy(false);
    }
  };

  return html`<div class="overlay">
    <section class="review" role="dialog" aria-label="Review the change">
      <h2>Review: ${change.title}</h2>
      ${conflict
        ? html`<div class="conflict" role="alert" data-conflict="1">
            <p><strong>Changed meanwhile.</strong> This change was prepared against revision ${change.revision}; the state has moved on, so nothing was written.</p>
            ${conflict.last
              ? html`<p>Revision ${conflict.last.revision} by <strong>${conflict.last.actor}</strong>, ${ago(conflict.last.time)} (${conflict.last.time}): “${conflict.last.reason}”</p>`
              : null}
            <div class="actions"><button class="primary" data-action="reload" onClick=${onReload}>Reload</button> <button onClick=${onCancel}>Close</button></div>
          </div>`
        : html`
          ${preview
            ? html`<p class="muted">Checked against revision ${preview.revision}. What it changes:</p>
                ${preview.changes.map((c) => html`<h3>${c.kind.replace('_', ' ')} <code>${c.key}</code></h3><${Diff} before=${c.before} after=${c.after ?? c.patch} />`)}`
            : error
              ? null
              : html`<p class="muted">Checking the change…</p>`}
          <${Problem} error=${error} />
          <label>Reason (goes to the audit log)
            <textarea name="reason" rows="2" maxlength="1000" value=${reason} onInput=${(e) => setReason(e.target.value)} placeholder="Why this change?"></textarea>
          </label>
          <div class="actions">
            <button class="primary" data-action="confirm" disabled=${busy || !preview || !reason.trim()} onClick=${confirm}>Confirm</button>
            <button data-action="cancel" onClick=${onCancel}>Cancel</button>
          </div>`}
    </section>
  </div>`;
}

// ---- sign-in ----

function SignIn({ onSignedIn, note }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    token = value.trim();
    try {
      const who = await api('GET', '/whoami');
      sessionStorage.setItem(TOKEN_KEY, token);
      onSignedIn(who);
    } catch (err) {
      token = null;
      setError(err.status === 401 ? new ApiError(401, { error: { code: 'unauthorized', message: 'That is not an admin token of this gateway.' } }) : err);
    }
  };
  return html`<main class="signin">
    <h1>sluice console</h1>
    <form onSubmit=${submit}>
      <label>Admin token
        <input type="password" name="token" autocomplete="off" value=${value} onInput=${(e) => setValue(e.target.value)} autofocus />
      </label>
      <button class="primary" type="submit" data-action="sign-in">Sign in</button>
      <p class="muted">The token stays in this tab's session storage and goes to the admin API as a bearer header. A read token sees everything and changes nothing.</p>
      ${note ? html`<p class="muted">${note}</p>` : null}
      <${Problem} error=${error} />
    </form>
  </main>`;
}

// ---- the flags list ----

function FlagsPage({ who }) {
  const [flags, setFlags] = useState(null);
  const [guards, setGuards] = useState({});
  const [experiments, setExperiments] = useState({});
  const [filter, setFilter] = useState('');
  const [error, setError] = useState(null);
  const turn = useRef(0);

  const loadFlags = async () => setFlags((await api('GET', '/flags')).flags);
  const loadGuards = async () => setGuards(Object.fromEntries((await api('GET', '/guards')).guards.map((g) => [g.flag, g])));
  const loadExperiments = async () =>
    setExperiments(Object.fromEntries((await api('GET', '/experiments')).experiments.map((e) => [e.flag, e])));

  useEffect(() => {
    Promise.all([loadFlags(), loadGuards(), loadExperiments()]).catch(setError);
  }, []);
  // Then one of the three each second, in turn.
  usePoll(async () => {
    const k = turn.current++ % 3;
    if (turn.current === 1) return;
    await [loadFlags, loadGuards, loadExperiments][k]();
    setError(null);
  }, []);

  if (!flags) return html`<${Problem} error=${error} /><p class="muted">Loading flags…</p>`;
  const words = filter.trim().toLowerCase();
  const shown = flags.filter((f) => !words || `${f.key} ${f.variations.map((v) => v.name).join(' ')}`.toLowerCase().includes(words));
  return html`<main>
    <div class="toolbar">
      <h1>Flags</h1>
      <input type="search" name="filter" placeholder="Filter flags" value=${filter} onInput=${(e) => setFilter(e.target.value)} />
    </div>
    <${Problem} error=${error} />
    <table class="flags">
      <thead><tr><th>Flag</th><th>State</th><th>Serving now (fallthrough)</th><th>Guard</th><th>Experiment</th><th>Last change</th></tr></thead>
      <tbody>
        ${shown.map(
          (f) => html`<tr data-flag=${f.key}>
            <td><a href=${`#/flags/${enc(f.key)}/overview`}>${f.key}</a></td>
            <td><span class=${`badge ${f.on ? 'on' : 'off'}`}>${f.on ? 'on' : 'off'}</span></td>
            <td class="serving">${serving(f)}</td>
            <td>${guardBadge(guards[f.key])}</td>
            <td>${experimentBadge(experiments[f.key])}</td>
            <td class="last-change">${f.last_change
              ? html`<span title=${f.last_change.time}><strong>${f.last_change.actor}</strong> · ${ago(f.last_change.time)}</span><br /><span class="muted">${f.last_change.reason}</span>`
              : html`<span class="muted">as the config file has it</span>`}</td>
          </tr>`
        )}
      </tbody>
    </table>
    ${shown.length === 0 ? html`<p class="muted">No flag matches “${filter}”.</p>` : null}
  </main>`;
}

// ---- a flag's page ----

const TABS = ['overview', 'change', 'monitoring', 'experiment', 'history'];

function FlagPage({ who, flagKey, tab }) {
  const [answer, setAnswer] = useState(null);
  const [aiConfigs, setAiConfigs] = useState(null);
  const [error, setError] = useState(null);
  const [review, setReview] = useState(null);
  const [notice, setNotice] = useState(null);

  const load = async () => {
    try {
      const [f, c] = await Promise.all([api('GET', `/flags/${enc(flagKey)}`), api('GET', '/ai-configs')]);
      setAnswer(f);
      setAiConfigs(c.ai_configs);
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    load();
  }, [flagKey]);

  if (!answer) return html`<main><${Problem} error=${error} /><p class="muted">Loading ${flagKey}…</p></main>`;
  const flag = answer.flag;
  const propose = (c) => setReview({ ...c, revision: answer.revision, flag: flagKey });
  const done = (applied) => {
    setReview(null);
    setNotice(`Applied as revision ${applied.revision}.`);
    load();
  };
  const ctx = { who, flag, def: flag.definition, revision: answer.revision, aiConfigs, propose, reload: load };
  return html`<main>
    <div class="toolbar">
      <h1><a href="#/">Flags</a> / ${flag.key}</h1>
      <span class=${`badge ${flag.on ? 'on' : 'off'}`}>${flag.on ? 'on' : 'off'}</span>
      <span class="serving">${serving(flag)}</span>
      <span class="muted">revision ${answer.revision}</span>
    </div>
    <nav class="tabs">${TABS.map((t) => html`<a class=${t === tab ? 'active' : ''} href=${`#/flags/${enc(flagKey)}/${t}`}>${t[0].toUpperCase() + t.slice(1)}</a>`)}</nav>
    ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
    <${Problem} error=${error} />
    ${tab === 'overview' ? html`<${Overview} ...${ctx} />` : null}
    ${tab === 'change' ? html`<${Change} key=${answer.revision} ...${ctx} />` : null}
    ${tab === 'monitoring' ? html`<${Monitoring} ...${ctx} />` : null}
    ${tab === 'experiment' ? html`<${Experiment} ...${ctx} />` : null}
    ${tab === 'history' ? html`<${History} ...${ctx} />` : null}
    ${review
      ? html`<${Review} change=${review} onDone=${done} onCancel=${() => setReview(null)}
          onReload=${() => {
            setReview(null);
            setNotice('Reloaded: the flag as it is now.');
            load();
          }} />`
      : null}
  </main>`;
}

function versionOf(aiConfigs, ref) {
  const versions = aiConfigs?.[ref.ai_config]?.versions || [];
  return versions.find((v) => v.version === ref.version);
}

function clauseText(c) {
  if (c.segment) return `in segment ${c.segment}`;
  return `${c.attribute} ${c.negate ? 'not ' : ''}${c.op} ${JSON.stringify(c.values)}`;
}

function serveText(x) {
  if (x.variation !== undefined) return x.variation;
  return split(x).map((w) => `${num(w.percent, 4)} % ${w.variation}`).join(' · ');
}

function Overview({ def, flag, aiConfigs }) {
  const [context, setContext] = useState('{"kind": "user", "key": "user-1", "name": "Ada", "email": "ada@example.com"}');
  const [variables, setVariables] = useState('{"topic": "billing"}');
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const evaluate = async (e) => {
    e?.preventDefault();
    setError(null);
    try {
      const body = { context: JSON.parse(context), variables: JSON.parse(variables || '{}') };
      setResult(await api('POST', `/flags/${enc(flag.key)}/evaluate`, { body }));
    } catch (err) {
      setResult(null);
      setError(err instanceof SyntaxError ? { message: `Not JSON: ${err.message}` } : err);
    }
  };
  useEffect(() => {
    evaluate();
  }, [flag.key]);
  return html`<section>
    ${def.description ? html`<p>${def.description}</p>` : null}
    <h2>Variations</h2>
    <table>
      <thead><tr><th>Variation</th><th>AI config</th><th>Provider</th><th>Model</th><th>Parameters</th></tr></thead>
      <tbody>${(def.variations || []).map((v) => {
        const ver = v.ai_config ? versionOf(aiConfigs, v) : null;
        return html`<tr data-variation=${v.name}>
          <td>${v.name}${def.off_variation === v.name ? html` <span class="muted">(off)</span>` : null}</td>
          <td>${v.ai_config ? `${v.ai_config} v${v.version}` : html`<code>${JSON.stringify(v.value)}</code>`}</td>
          <td>${ver?.provider ?? '—'}</td><td>${ver?.model ?? '—'}</td>
          <td><code>${ver?.parameters ? JSON.stringify(ver.parameters) : '—'}</code></td>
        </tr>`;
      })}</tbody>
    </table>
    <h2>Targeting</h2>
    <ol class="targeting">
      ${(def.targets || []).map((t) => html`<li>Targets ${t.context_kind ? `(${t.context_kind}) ` : ''}<code>${(t.values || []).join(', ')}</code> → <strong>${t.variation}</strong></li>`)}
      ${(def.rules || []).map((r) => html`<li>Rule <code>${r.id ?? '?'}</code>: ${(r.clauses || []).map(clauseText).join(' and ')} → <strong>${serveText(r)}</strong></li>`)}
      <li>Fallthrough → <strong>${serveText(def.fallthrough || {})}</strong></li>
    </ol>
    <h2>Rendered for a context</h2>
    <form class="evaluate" onSubmit=${evaluate}>
      <label>Context (JSON)<textarea name="context" rows="2" value=${context} onInput=${(e) => setContext(e.target.value)}></textarea></label>
      <label>Template variables (JSON)<textarea name="variables" rows="2" value=${variables} onInput=${(e) => setVariables(e.target.value)}></textarea></label>
      <button type="submit" data-action="render">Render</button>
    </form>
    <${Problem} error=${error} />
    ${result
      ? html`<div class="evaluation" data-variation=${result.variation}>
          <p>Serves <strong>${result.variation}</strong> (${result.reason?.kind}${result.reason?.ruleId ? ` ${result.reason.ruleId}` : ''})${result.ai_config ? html` · ${result.ai_config.key} v${result.ai_config.version} · ${result.ai_config.provider} / ${result.ai_config.model}` : null}</p>
          ${(result.ai_config?.messages || []).map((m) => html`<div class="message"><span class="role">${m.role}</span><pre>${m.content}</pre></div>`)}
        </div>`
      : null}
  </section>`;
}

function Change({ who, def, flag, aiConfigs, propose }) {
  const names = (def.variations || []).map((v) => v.name);
  const initial = () => {
    const current = Object.fromEntries(split(def.fallthrough).map((w) => [w.variation, w.percent]));
    return names.map((n) => current[n] ?? 0);
  };
  const [weights, setWeights] = useState(initial);
  const [target, setTarget] = useState('fallthrough');
  const [serve, setServe] = useState(names[0]);
  const [pointVar, setPointVar] = useState(names[0]);
  const firstRef = (def.variations || []).find((v) => v.ai_config);
  const [pointCfg, setPointCfg] = useState(firstRef?.ai_config ?? Object.keys(aiConfigs || {})[0]);
  const [pointVer, setPointVer] = useState(firstRef?.version ?? 1);

  // Keep the sum at 100: what one variation gains, the others give up in proportion.
  const setWeight = (i, value) => {
    const v = Math.min(100, Math.max(0, Math.round(Number(value) * 10) / 10 || 0));
    const others = weights.map((w, k) => (k === i ? 0 : w));
    const rest = others.reduce((a, b) => a + b, 0);
    const next = weights.map((w, k) => {
      if (k === i) return v;
      if (rest === 0) return 0;
      return Math.round(((100 - v) * w) / rest * 10) / 10;
    });
    if (rest === 0 && names.length > 1) next[i === names.length - 1 ? 0 : names.length - 1] = Math.round((100 - v) * 10) / 10;
    // Rounding leftovers go to the last other variation.
    const drift = Math.round((100 - next.reduce((a, b) => a + b, 0)) * 10) / 10;
    if (drift !== 0) {
      const k = next.length - 1 === i ? next.length - 2 : next.length - 1;
      if (k >= 0) next[k] = Math.round((next[k] + drift) * 10) / 10;
    }
    setWeights(next);
  };
  const versions = aiConfigs?.[pointCfg]?.versions || [];
  const base = `/flags/${enc(flag.key)}`;
  return html`<section class="change">
    <div class="card">
      <h2>Kill switch</h2>
      ${flag.on
        ? html`<p>The flag is on. Killing it serves <strong>${def.off_variation ?? 'its off variation'}</strong> to everyone.</p>
            <${WriteButton} who=${who} kind="danger" name="kill" onClick=${() => propose({ title: `kill ${flag.key}`, method: 'POST', path: `${base}/kill`, body: {} })}>Kill…</${WriteButton}>`
        : html`<p>The flag is off: everyone gets <strong>${def.off_variation ?? 'its off variation'}</strong>.</p>
            <${WriteButton} who=${who} kind="primary" name="restore" onClick=${() => propose({ title: `restore ${flag.key}`, method: 'POST', path: `${base}/restore`, body: {} })}>Restore…</${WriteButton}>`}
    </div>
    <div class="card">
      <h2>Rollout of the fallthrough</h2>
      ${names.map(
        (n, i) => html`<div class="weight" data-variation=${n}>
          <label>${n}</label>
          <input type="range" min="0" max="100" step="0.1" value=${weights[i]} disabled=${who.role !== 'write'} title=${who.role !== 'write' ? READ_ONLY : ''} onInput=${(e) => setWeight(i, e.target.value)} />
          <input type="number" name=${`percent-${n}`} min="0" max="100" step="0.1" value=${weights[i]} disabled=${who.role !== 'write'} title=${who.role !== 'write' ? READ_ONLY : ''} onChange=${(e) => setWeight(i, e.target.value)} /> %
        </div>`
      )}
      <p class="muted">Sum: ${num(weights.reduce((a, b) => a + b, 0), 4)} %</p>
      <${WriteButton} who=${who} kind="primary" name="review-rollout" onClick=${() =>
        propose({
          title: `rollout of ${flag.key}: ${names.map((n, i) => `${weights[i]} % ${n}`).join(', ')}`,
          method: 'PUT',
          path: `${base}/rollout`,
          body: { weights: names.map((n, i) => ({ variation: n, percent: weights[i] })) },
        })}>Review rollout…</${WriteButton}>
    </div>
    <div class="card">
      <h2>Serve one variation</h2>
      <label>To <select name="serve-target" value=${target} onChange=${(e) => setTarget(e.target.value)}>
        <option value="fallthrough">the fallthrough</option>
        ${(def.rules || []).filter((r) => r.id).map((r) => html`<option value=${`rule:${r.id}`}>rule ${r.id}</option>`)}
      </select></label>
      <label>Variation <select name="serve-variation" value=${serve} onChange=${(e) => setServe(e.target.value)}>${names.map((n) => html`<option value=${n}>${n}</option>`)}</select></label>
      <${WriteButton} who=${who} name="review-serve" onClick=${() =>
        propose(
          target === 'fallthrough'
            ? { title: `serve ${serve} to the fallthrough`, method: 'PUT', path: `${base}/fallthrough`, body: { variation: serve } }
            : { title: `serve ${serve} to ${target}`, method: 'PUT', path: `${base}/rules/${enc(target.slice(5))}`, body: { variation: serve } }
        )}>Review…</${WriteButton}>
    </div>
    <div class="card">
      <h2>Point a variation at a version</h2>
      <label>Variation <select name="point-variation" value=${pointVar} onChange=${(e) => setPointVar(e.target.value)}>${names.map((n) => html`<option value=${n}>${n}</option>`)}</select></label>
      <label>AI config <select name="point-config" value=${pointCfg} onChange=${(e) => setPointCfg(e.target.value)}>${Object.keys(aiConfigs || {}).map((k) => html`<option value=${k}>${k}</option>`)}</select></label>
      <label>Version <select name="point-version" value=${pointVer} onChange=${(e) => setPointVer(Number(e.target.value))}>${versions.map((v) => html`<option value=${v.version}>v${v.version} · ${v.provider} / ${v.model}</option>`)}</select></label>
      <${WriteButton} who=${who} name="review-point" onClick=${() =>
        propose({
          title: `point ${pointVar} at ${pointCfg} v${pointVer}`,
          method: 'PUT',
          path: `${base}/variations/${enc(pointVar)}`,
          body: { ai_config: pointCfg, version: Number(pointVer) },
        })}>Review…</${WriteButton}>
    </div>
  </section>`;
}

const WINDOWS = [
  ['5m', '5 min'],
  ['15m', '15 min'],
  ['1h', '1 h'],
  ['6h', '6 h'],
  ['24h', '24 h'],
];

function Monitoring({ who, flag, def, revision, propose }) {
  const [windowName, setWindow] = useState('15m');
  const [series, setSeries] = useState(null);
  const [guard, setGuard] = useState(undefined);
  const [error, setError] = useState(null);
  const turn = useRef(0);
  usePoll(async () => {
    // The history and the guard in turn, one request a second (both at first).
    const k = turn.current++;
    try {
      if (k === 0 || k % 2 === 0) {
        setSeries(await api('GET', `/flags/${enc(flag.key)}/timeseries?window=${windowName}`));
      }
      if (k === 0 || k % 2 === 1) {
        setGuard((await api('GET', '/guards')).guards.find((g) => g.flag === flag.key) || null);
      }
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, [flag.key, windowName]);

  const base = `/flags/${enc(flag.key)}/guard`;
  const guardAction = (action, label) =>
    html`<${WriteButton} who=${who} name=${`guard-${action}`} onClick=${() => propose({ title: `${label} the guard of ${flag.key}`, method: 'POST', path: `${base}/${action}`, body: {} })}>${label}…</${WriteButton}>`;
  const metricKeys = series ? [...new Set(series.variations.flatMap((v) => Object.keys(v.total.metrics)))].sort() : [];
  const names = series ? series.variations.map((v) => v.variation) : [];
  const from = series ? series.to - series.window : 0;
  const chart = (title, pick, format, max) => html`<${LineChart} title=${title} from=${from} to=${series.to} format=${format} max=${max}
      series=${series.variations.map((v) => ({ name: v.variation, points: v.points.map((p) => ({ t: p.t, v: pick(p) })) }))} />`;
  const floor = def.guard?.min_samples;
  return html`<section class="monitoring">
    <div class="toolbar">
      <label>Window <select name="window" value=${windowName} onChange=${(e) => setWindow(e.target.value)}>${WINDOWS.map(([v, t]) => html`<option value=${v}>${t}</option>`)}</select></label>
      ${series ? html`<span class="muted">${series.step} s per point · refreshed ${new Date(series.to * 1000).toLocaleTimeString()}</span>` : null}
    </div>
    <${Problem} error=${error} />
    ${guard
      ? html`<div class="guard" data-guard-state=${guard.state}>
          <h2>Guard ${guardBadge(guard)}</h2>
          <p class="muted">${guard.control} (control) vs ${guard.treatment}${guard.percent !== null && guard.percent !== undefined ? ` · ${guard.percent} % at this step` : ''}${guard.checked_at ? ` · checked ${ago(guard.checked_at)}` : ''}${guard.health.length ? ` · ${guard.health.join(', ')}` : ''}${guard.srm_p_value !== null && guard.srm_p_value !== undefined ? ` · SRM p = ${num(guard.srm_p_value)}` : ''}</p>
          ${guard.error ? html`<div class="error">${guard.error}</div>` : null}
          ${guard.last_trip
            ? html`<div class="trip" data-trip=${guard.last_trip.metric}><strong>Tripped on ${guard.last_trip.metric}</strong> at revision ${guard.last_trip.revision}, ${ago(guard.last_trip.at)}: ${guard.last_trip.reason}</div>`
            : null}
          <div class="tiles">
            ${guard.metrics.map(
              (m) => html`<div class=${`tile decision-${m.decision}`} data-metric=${m.metric}>
                <h3>${m.metric}</h3>
                <p class="big">${m.estimate === null ? '—' : num(m.estimate)}</p>
                <p>interval ${m.interval ? `[${num(m.interval[0])}, ${num(m.interval[1])}]` : '—'} · margin ${num(m.margin)}</p>
                <p>samples ${int(m.control_samples)} / ${int(m.treatment_samples)}${floor ? ` (floor ${int(floor)})` : ''}</p>
                <p>decision <strong>${m.decision}</strong>${m.lambda !== null ? ` · Λ ${num(m.lambda)}` : ''}</p>
              </div>`
            )}
          </div>
          <div class="actions">
            ${guard.state === 'armed' ? guardAction('pause', 'Pause') : null}
            ${guard.state === 'paused' ? guardAction('resume', 'Resume') : null}
            ${guard.state !== 'armed' || guard.last_trip ? guardAction('rearm', 'Re-arm') : null}
            ${guard.state === 'rolled_back' ? guardAction('dismiss', 'Dismiss (false alarm)') : null}
          </div>
        </div>`
      : guard === null
        ? html`<p class="muted">This flag has no guard.</p>`
        : null}
    ${series
      ? html`<h2>Per variation, last ${WINDOWS.find((w) => w[0] === windowName)?.[1]}</h2>
        <table class="summary">
          <thead><tr><th>Variation</th><th>Requests</th><th>Error rate</th><th>p50</th><th>p95</th><th>TTFT</th><th>Tokens in / out</th><th>Cost</th>${metricKeys.map((k) => html`<th>${k}</th>`)}</tr></thead>
          <tbody>${series.variations.map(
            (v) => html`<tr data-variation=${v.variation}>
              <td>${v.variation}</td><td class="requests">${int(v.total.requests)}</td><td>${pct(v.total.error_rate)}</td>
              <td>${ms(v.total.latency_p50_ms)}</td><td>${ms(v.total.latency_p95_ms)}</td><td>${ms(v.total.ttft_ms)}</td>
              <td>${int(v.total.input_tokens)} / ${int(v.total.output_tokens)}</td><td>${usd(v.total.cost_usd)}</td>
              ${metricKeys.map((k) => html`<td>${v.total.metrics[k] ? `${num(v.total.metrics[k].mean)} (n ${int(v.total.metrics[k].n)})` : '—'}</td>`)}
            </tr>`
          )}</tbody>
        </table>
        <${Legend} names=${names} />
        <div class="charts">
          ${chart('Requests per step', (p) => p.requests, (x) => num(x, 2))}
          ${chart('Error rate', (p) => p.error_rate, (x) => pct(x, 0), 1)}
          ${chart('Latency p50', (p) => p.latency_p50_ms, ms)}
          ${chart('Latency p95', (p) => p.latency_p95_ms, ms)}
          ${chart('Time to first token', (p) => p.ttft_ms, ms)}
          ${chart('Output tokens per step', (p) => p.output_tokens, (x) => num(x, 2))}
          ${chart('Cost per step', (p) => p.cost_usd, usd)}
          ${metricKeys.map((k) => chart(k, (p) => p.metrics[k]?.mean ?? null, (x) => num(x)))}
        </div>`
      : html`<p class="muted">Loading the history…</p>`}
  </section>`;
}

function Experiment({ who, flag, propose }) {
  const [results, setResults] = useState(undefined);
  const [error, setError] = useState(null);
  usePoll(async () => {
    try {
      setResults(await api('GET', `/experiments/${enc(flag.key)}`));
      setError(null);
    } catch (e) {
      if (e.status === 404) setResults(null);
      else setError(e);
    }
  }, [flag.key], 5000);
  if (results === null) return html`<p class="muted">This flag has no experiment.</p>`;
  if (!results) return html`<${Problem} error=${error} /><p class="muted">Loading the results…</p>`;
  const r = results.recommendation;
  return html`<section class="experiment">
    <${Problem} error=${error} />
    <p>Iteration ${results.iteration}${results.iteration_started ? `, since ${results.iteration_started}` : ''} · ${results.state} · control <strong>${results.control}</strong> · ship at ${pct(results.chance_to_win, 0)} chance to win, expected loss under ${num(results.max_loss)}</p>
    <div class=${`recommendation exp-${r.action}`} data-recommendation=${r.action}>
      <strong>${r.action === 'ship' ? `Ship ${r.variation}` : r.action.replace('_', ' ')}</strong>: ${r.reason}
      ${r.samples_short ? html` · ${int(r.samples_short)} more samples per arm needed` : null}
    </div>
    <p>Sample ratio: served ${results.srm_p_value === null ? '—' : `p = ${num(results.srm_p_value)}`} · primary metric's coverage ${results.coverage_p_value === null ? '—' : `p = ${num(results.coverage_p_value)}`}</p>
    <table>
      <thead><tr><th>Arm</th><th>Weight</th><th>Served</th><th></th></tr></thead>
      <tbody>${results.arms.map(
        (a) => html`<tr><td>${a.variation}</td><td>${num(a.weight, 4)} %</td><td>${int(a.served)}</td>
          <td><${WriteButton} who=${who} name=${`ship-${a.variation}`} onClick=${() => propose({ title: `ship ${a.variation} (the experiment stops)`, method: 'POST', path: `/experiments/${enc(flag.key)}/ship`, body: { variation: a.variation } })}>Ship…</${WriteButton}></td></tr>`
      )}</tbody>
    </table>
    ${results.metrics.map(
      (m) => html`<h3>${m.metric} <span class="muted">(${m.role}, ${m.better} is better)</span></h3>
        <table>
          <thead><tr><th>Arm</th><th>n</th><th>Mean [95 %]</th><th>Lift [95 %]</th><th>Chance to beat control</th><th>Expected loss</th><th>P(best)</th></tr></thead>
          <tbody>${m.arms.map(
            (a) => html`<tr><td>${a.variation}</td><td>${int(a.n)}</td>
              <td>${num(a.mean)} ${a.low !== null ? `[${num(a.low)}, ${num(a.high)}]` : ''}</td>
              <td>${a.lift === null ? '—' : `${pct(a.lift)} [${pct(a.lift_low)}, ${pct(a.lift_high)}]`}</td>
              <td>${pct(a.chance_to_beat_control)}</td><td>${num(a.expected_loss)}</td><td>${pct(a.chance_to_be_best)}</td></tr>`
          )}</tbody>
        </table>`
    )}
  </section>`;
}

function History({ who, flag, propose }) {
  const [entries, setEntries] = useState(null);
  const [next, setNext] = useState(null);
  const [open, setOpen] = useState({});
  const [error, setError] = useState(null);
  const load = async (before) => {
    try {
      const page = await api('GET', `/audit?flag=${enc(flag.key)}&limit=25${before ? `&before=${before}` : ''}`);
      setEntries((old) => (before ? [...(old || []), ...page.entries] : page.entries));
      setNext(page.next);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    load();
  }, [flag.key]);
  if (!entries) return html`<${Problem} error=${error} /><p class="muted">Loading the audit log…</p>`;
  return html`<section class="history">
    <${Problem} error=${error} />
    ${entries.length === 0 ? html`<p class="muted">No change to this flag since it came from the config file.</p>` : null}
    <ol class="entries">
      ${entries.map((e) => {
        const mine = e.changes.filter((c) => c.kind === 'flag' && c.key === flag.key);
        return html`<li data-revision=${e.revision}>
          <div class="entry-head">
            <strong>revision ${e.revision}</strong> · ${e.actor} · <span title=${e.time}>${ago(e.time)}</span>
            <span class="reason">${e.reason}</span>
            <button data-action="diff" onClick=${() => setOpen({ ...open, [e.revision]: !open[e.revision] })}>${open[e.revision] ? 'Hide diff' : 'Diff'}</button>
            <${WriteButton} who=${who} name="rollback" onClick=${() => propose({ title: `roll ${flag.key} back to revision ${e.revision}`, method: 'POST', path: `/flags/${enc(flag.key)}/rollback`, body: { revision: e.revision } })}>Roll back to this revision…</${WriteButton}>
          </div>
          ${open[e.revision] ? (mine.length ? mine : e.changes).map((c) => html`<${Diff} before=${c.before} after=${c.after ?? c.patch} />`) : null}
        </li>`;
      })}
    </ol>
    ${next ? html`<button onClick=${() => load(next)}>Older…</button>` : null}
  </section>`;
}

// ---- AI configs ----

function AiConfigsPage({ who, configKey }) {
  const [list, setList] = useState(null);
  const [error, setError] = useState(null);
  const [review, setReview] = useState(null);
  const [notice, setNotice] = useState(null);
  const load = async () => {
    try {
      setList(await api('GET', '/ai-configs'));
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    load();
  }, [configKey]);
  if (!list) return html`<main><${Problem} error=${error} /><p class="muted">Loading AI configs…</p></main>`;
  const configs = list.ai_configs;
  if (!configKey) {
    return html`<main>
      <h1>AI configs</h1>
      <table>
        <thead><tr><th>AI config</th><th>Versions</th><th>Latest</th></tr></thead>
        <tbody>${Object.entries(configs).map(([k, c]) => {
          const latest = (c.versions || []).at(-1);
          return html`<tr data-ai-config=${k}><td><a href=${`#/ai-configs/${enc(k)}`}>${k}</a></td><td>${(c.versions || []).length}</td>
            <td>${latest ? `v${latest.version} · ${latest.provider} / ${latest.model}` : '—'}</td></tr>`;
        })}</tbody>
      </table>
    </main>`;
  }
  const config = configs[configKey];
  if (!config) return html`<main><p>No AI config <code>${configKey}</code>.</p></main>`;
  return html`<main>
    <h1><a href="#/ai-configs">AI configs</a> / ${configKey}</h1>
    ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
    <${Versions} config=${config} />
    <${AddVersion} who=${who} configKey=${configKey} config=${config}
      propose=${(c) => setReview({ ...c, revision: list.revision })} />
    ${review
      ? html`<${Review} change=${review} onCancel=${() => setReview(null)}
          onDone=${(applied) => {
            setReview(null);
            setNotice(`Added: revision ${applied.revision}.`);
            load();
          }}
          onReload=${() => {
            setReview(null);
            load();
          }} />`
      : null}
  </main>`;
}

const plural = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`;

function Versions({ config }) {
  const versions = config.versions || [];
  const [a, setA] = useState(versions.length > 1 ? versions.at(-2).version : versions[0]?.version);
  const [b, setB] = useState(versions.at(-1)?.version);
  const find = (n) => versions.find((v) => v.version === Number(n));
  return html`<section>
    <h2>Versions</h2>
    <table>
      <thead><tr><th>Version</th><th>Provider</th><th>Model</th><th>Parameters</th><th>Prompt</th></tr></thead>
      <tbody>${versions.map(
        (v) => html`<tr data-version=${v.version}><td>v${v.version}${v.enabled === false ? ' (disabled)' : ''}</td><td>${v.provider}</td><td>${v.model}</td>
          <td><code>${v.parameters ? JSON.stringify(v.parameters) : '—'}</code></td><td>${v.mode === 'agent' ? `agent: instructions, ${(v.tools || []).map((t) => t.name).join(', ') || 'no tools'}` : plural((v.messages || []).length, 'message')}</td></tr>`
      )}</tbody>
    </table>
    <h2>Compare</h2>
    <label>From <select name="diff-a" value=${a} onChange=${(e) => setA(Number(e.target.value))}>${versions.map((v) => html`<option value=${v.version}>v${v.version}</option>`)}</select></label>
    <label>to <select name="diff-b" value=${b} onChange=${(e) => setB(Number(e.target.value))}>${versions.map((v) => html`<option value=${v.version}>v${v.version}</option>`)}</select></label>
    <${Diff} before=${find(a)} after=${find(b)} />
  </section>`;
}

function AddVersion({ who, configKey, config, propose }) {
  const latest = (config.versions || []).at(-1) || {};
  const [text, setText] = useState(() => pretty({ ...latest, version: (latest.version || 0) + 1 }));
  const [check, setCheck] = useState(null);
  const parse = () => {
    try {
      return [JSON.parse(text), null];
    } catch (e) {
      return [null, { message: `Not JSON: ${e.message}` }];
    }
  };
  const path = `/ai-configs/${enc(configKey)}/versions`;
  const runCheck = async () => {
    const [version, err] = parse();
    if (err) return setCheck({ error: err });
    try {
      await api('POST', `${path}?dry_run=true`, { body: { version, reason: '(check)' } });
      setCheck({ ok: true });
    } catch (e) {
      setCheck({ error: e });
    }
  };
  return html`<section class="card">
    <h2>Add a version</h2>
    <p class="muted">A published version never changes; a new one is checked — its template compiled, the config rebuilt — before it is saved.</p>
    <textarea name="new-version" rows="14" class="code" value=${text} onInput=${(e) => {
      setText(e.target.value);
      setCheck(null);
    }}></textarea>
    <div class="actions">
      <${WriteButton} who=${who} name="check-version" onClick=${runCheck}>Check</${WriteButton}>
      <${WriteButton} who=${who} kind="primary" name="review-version" onClick=${() => {
        const [version, err] = parse();
        if (err) return setCheck({ error: err });
        propose({ title: `add version ${version.version} to ${configKey}`, method: 'POST', path, body: { version } });
      }}>Review & save…</${WriteButton}>
    </div>
    ${check?.ok ? html`<p class="notice" data-check="ok">The version is valid.</p>` : null}
    <${Problem} error=${check?.error} />
  </section>`;
}

// ---- the shell ----

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'flags' && parts[1]) return { page: 'flag', key: parts[1], tab: TABS.includes(parts[2]) ? parts[2] : 'overview' };
  if (parts[0] === 'ai-configs') return { page: 'ai-configs', key: parts[1] || null };
  return { page: 'flags' };
}

function App() {
  const [who, setWho] = useState(undefined);
  const [route, setRoute] = useState(parseRoute);
  const [note, setNote] = useState(null);
  useEffect(() => {
    const onHash = () => setRoute(parseRoute());
    window.addEventListener('hashchange', onHash);
    onSignedOut = () => {
      sessionStorage.removeItem(TOKEN_KEY);
      token = null;
      setNote('The token was refused: sign in again.');
      setWho(null);
    };
    if (token) api('GET', '/whoami').then(setWho, () => setWho(null));
    else setWho(null);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  if (who === undefined) return html`<p class="loading">Loading the console…</p>`;
  if (who === null) return html`<${SignIn} note=${note} onSignedIn=${(w) => { setNote(null); setWho(w); }} />`;
  const signOut = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    setWho(null);
  };
  return html`<div class="shell">
    <header>
      <a class="brand" href="#/">sluice</a>
      <nav><a class=${route.page !== 'ai-configs' ? 'active' : ''} href="#/">Flags</a> <a class=${route.page === 'ai-configs' ? 'active' : ''} href="#/ai-configs">AI configs</a></nav>
      <span class="who" data-role=${who.role}>${who.name} · ${who.role === 'write' ? 'can change' : 'read only'} <button data-action="sign-out" onClick=${signOut}>Sign out</button></span>
    </header>
    ${route.page === 'flags' ? html`<${FlagsPage} who=${who} />` : null}
    ${route.page === 'flag' ? html`<${FlagPage} key=${route.key} who=${who} flagKey=${route.key} tab=${route.tab} />` : null}
    ${route.page === 'ai-configs' ? html`<${AiConfigsPage} key=${route.key || 'list'} who=${who} configKey=${route.key} />` : null}
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
