// The build page of the operator surface. Everything it shows comes from
// the REST API (grpc-gateway) with the operator token in the Authorization
// header; the token lives in this tab's sessionStorage and never in a URL.
// Build logs are user-controlled: every string goes into the page through
// textContent, never as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'obb-operator-token';
  const REFRESH_MS = 2000;
  const MAX_LOG_LINES = 20000;
  const MAX_SCANS = 2; // background log reads finding builds' hosts

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let session = 0; // bumped at sign-in and sign-out: stale work stops

  class AuthError extends Error {}

  // el makes an element; children are nodes or strings (text nodes).
  function el(tag, cls, ...children) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function setText(e, text) {
    text = String(text);
    if (e.textContent !== text) e.textContent = text;
  }

  // ---- API ---------------------------------------------------------------

  function headers(body) {
    const h = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
    if (body !== undefined) h['Content-Type'] = 'application/json';
    return h;
  }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: headers(body),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
    const text = await res.text();
    let data = {};
    try { data = text ? JSON.parse(text) : {}; } catch (_) { data = { message: text }; }
    if (res.status === 401) throw new AuthError(data.message || 'unauthorized');
    if (!res.ok) throw new Error(data.message || (res.status + ' ' + res.statusText));
    return data;
  }

  // readEvents follows GET /v1/builds/{id}/logs: newline-delimited JSON,
  // {"result":{"event":...}} or {"error":{...}}. It resolves when the
  // stream ends (the build's end, or the server closed it).
  async function readEvents(id, signal, onEvent) {
    const res = await fetch('/v1/builds/' + encodeURIComponent(id) + '/logs', {
      headers: headers(), signal, cache: 'no-store', credentials: 'omit',
    });
    if (res.status === 401) throw new AuthError('unauthorized');
    if (!res.ok || !res.body) {
      let msg = res.status + ' ' + res.statusText;
      try { msg = (await res.json()).message || msg; } catch (_) { /* keep the status */ }
      throw new Error(msg);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    const handle = (line) => {
      if (!line.trim()) return;
      let msg;
      try { msg = JSON.parse(line); } catch (_) { return; }
      if (msg.error) throw new Error(msg.error.message || 'the log stream failed');
      if (msg.result && msg.result.event) onEvent(msg.result.event);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        handle(line);
      }
    }
    handle(buf);
  }

  // ---- formatting ----------------------------------------------------------

  const BUILD_STATES = {
    BUILD_STATE_RUNNING: 'running',
    BUILD_STATE_SUCCEEDED: 'succeeded',
    BUILD_STATE_FAILED: 'failed',
    BUILD_STATE_CANCELLED: 'cancelled',
  };
  const stateName = (s) => BUILD_STATES[s] || 'unknown';

  function fmtTime(s) {
    if (!s) return '';
    const d = new Date(s);
    if (isNaN(d)) return '';
    const now = new Date();
    const hms = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    if (d.toDateString() === now.toDateString()) return hms;
    return d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + hms;
  }

  function fmtDuration(from, to) {
    const a = Date.parse(from);
    if (isNaN(a)) return '';
    const b = to ? Date.parse(to) : Date.now();
    let s = Math.max(0, Math.round((b - a) / 1000));
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const pad = (n) => String(n).padStart(2, '0');
    if (h) return h + 'h ' + pad(m) + 'm';
    if (m) return m + 'm ' + pad(s) + 's';
    return s + 's';
  }

  // ESC [ ... (colours, cursor moves) and OSC sequences in build output.
  const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]/g;
  const clean = (t) => String(t || '').replace(/[\r\n]+$/, '').replace(ANSI, '');

  // ---- what the page knows of each build's jobs ------------------------------

  // jobs: build id -> Map(service -> {state, host})
  const jobs = new Map();

  function noteJob(id, service, job) {
    if (!jobs.has(id)) jobs.set(id, new Map());
    const m = jobs.get(id);
    const j = m.get(service || '') || { state: '', host: '' };
    if (job.state) j.state = job.state;
    if (job.host) j.host = job.host;
    m.set(service || '', j);
  }

  // The placement line names the host too (builds another builder runs
  // reach this page through the journal, without job events).
  const BUILDING_ON = /^Building on ([^\s:]+)/;
  function noteLog(id, service, log) {
    const m = BUILDING_ON.exec(clean(log.text));
    if (m) noteJob(id, service, { host: m[1] });
  }

  function hostsOf(id) {
    const m = jobs.get(id);
    if (!m) return [];
    return [...new Set([...m.values()].map((j) => j.host).filter(Boolean))].sort();
  }

  // queued: a running build none of whose jobs has reached a host yet.
  function displayState(b) {
    const st = stateName(b.state);
    if (st !== 'running') return st;
    const m = jobs.get(b.buildId);
    if (m && m.size && [...m.values()].every((j) => j.state === 'JOB_STATE_QUEUED' && !j.host)) return 'queued';
    return st;
  }

  // Background scans read builds' logs for their hosts: a running build's
  // until its first job reaches a host, a finished one's to the end (once).
  const scans = new Map(); // id -> {busy, final, next}
  let scanning = 0;

  function scanHosts(builds) {
    for (const b of builds) {
      if (scanning >= MAX_SCANS) return;
      const id = b.buildId;
      if (id === current.id) continue; // the open log tells already
      const finished = stateName(b.state) !== 'running';
      const rec = scans.get(id) || { busy: false, final: false, next: 0 };
      scans.set(id, rec);
      if (rec.busy || rec.final || Date.now() < rec.next) continue;
      if (hostsOf(id).length || (b.jobs || []).length) continue; // the API says where its jobs run
      scan(id, rec, finished);
    }
  }

  async function scan(id, rec, full) {
    const mine = session;
    scanning++;
    rec.busy = true;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), full ? 30000 : 8000);
    let ended = false;
    try {
      await readEvents(id, ctl.signal, (ev) => {
        if (mine !== session) { ctl.abort(); return; }
        if (ev.job) {
          noteJob(id, ev.service, ev.job);
          if (!full && ev.job.host) ctl.abort();
        } else if (ev.log) {
          noteLog(id, ev.service, ev.log);
        }
      });
      ended = true;
    } catch (_) {
      /* aborted or failed: try again later */
    } finally {
      clearTimeout(timer);
      scanning--;
      rec.busy = false;
      rec.final = full && ended;
      rec.next = Date.now() + (full ? 60000 : 10000);
    }
    if (mine === session) {
      if (lastBuilds) renderBuilds(lastBuilds);
      if (lastBuilds) scanHosts(lastBuilds);
    }
  }

  // ---- hosts -----------------------------------------------------------------

  const hostRows = new Map(); // name -> {tr, cells..., button}

  function hostRow(name) {
    let r = hostRows.get(name);
    if (r) return r;
    r = {
      name: el('td', 'name'), archs: el('td'), plugin: el('td'),
      slots: el('td', 'slots'), health: el('td', 'wrap'), state: el('td'),
      button: el('button'),
    };
    r.button.type = 'button';
    r.button.dataset.host = name;
    r.button.addEventListener('click', () => hostAction(name, r.button));
    r.tr = el('tr', '', r.name, r.archs, r.plugin, r.slots, r.health, r.state, el('td', '', r.button));
    r.tr.dataset.host = name;
    hostRows.set(name, r);
    return r;
  }

  function renderHosts(hosts) {
    const tbody = $('hosts').tBodies[0];
    const seen = new Set();
    for (const h of hosts) {
      const name = String(h.name || '');
      seen.add(name);
      const r = hostRow(name);
      setText(r.name, name);
      const emulated = (h.emulatedArchs || []).length ? ' (emulated: ' + h.emulatedArchs.join(', ') + ')' : '';
      setText(r.archs, (h.nativeArchs || []).join(', ') + emulated);
      setText(r.plugin, h.plugin || '');
      const running = Number(h.running || 0);
      const max = Number(h.maxConcurrent || 0);
      const bar = el('span', 'bar', el('span'));
      bar.firstChild.style.width = (max ? Math.min(100, Math.round((100 * running) / max)) : 0) + '%';
      r.slots.replaceChildren(el('span', 'count', running + '/' + max), bar);
      r.slots.title = running + ' of ' + max + ' slots in use';
      const healthy = Boolean(h.healthy);
      const health = el('span', 'state ' + (healthy ? 'healthy' : 'unhealthy'), healthy ? 'healthy' : 'unhealthy');
      const detail = [h.healthMessage || '', h.lastSeen ? 'seen ' + fmtTime(h.lastSeen) : ''].filter(Boolean).join(' · ');
      r.health.replaceChildren(health, detail ? el('span', 'muted', ' ' + detail) : '');
      const draining = Boolean(h.draining);
      r.state.replaceChildren(el('span', 'state ' + (draining ? 'draining' : 'active'), draining ? 'draining' : 'active'));
      if (!r.button.dataset.busy) {
        r.button.dataset.action = draining ? 'resume' : 'drain';
        setText(r.button, draining ? 'Resume' : 'Drain');
        r.button.title = draining ? 'Place new jobs on ' + name + ' again' : 'Finish running builds on ' + name + ', place no new ones';
      }
      tbody.append(r.tr); // keeps the API's order; moves, not copies
    }
    for (const [name, r] of hostRows) {
      if (!seen.has(name)) { r.tr.remove(); hostRows.delete(name); }
    }
    $('hosts-empty').hidden = hosts.length > 0;
  }

  async function hostAction(name, button) {
    const action = button.dataset.action;
    if (action !== 'drain' && action !== 'resume') return;
    button.disabled = true;
    button.dataset.busy = '1';
    try {
      await api('POST', '/v1/hosts/' + encodeURIComponent(name) + ':' + action, {});
      status((action === 'drain' ? 'Draining ' : 'Resumed ') + name);
    } catch (e) {
      failed(e, (action === 'drain' ? 'Drain ' : 'Resume ') + name);
    } finally {
      delete button.dataset.busy;
      button.disabled = false;
      refreshNow();
    }
  }

  // ---- builds ----------------------------------------------------------------

  const buildRows = new Map(); // id -> {tr, cells...}
  let lastBuilds = null;

  function buildRow(id) {
    let r = buildRows.get(id);
    if (r) return r;
    r = {
      id: el('td', 'id'), fleet: el('td'), user: el('td'), state: el('td'), host: el('td'),
      services: el('td', 'wrap'), started: el('td'), duration: el('td', 'duration'),
    };
    r.tr = el('tr', '', r.id, r.fleet, r.user, r.state, r.host, r.services, r.started, r.duration);
    r.tr.dataset.build = id;
    r.tr.tabIndex = 0;
    r.tr.addEventListener('click', () => select(id));
    r.tr.addEventListener('keydown', (e) => { if (e.key === 'Enter') select(id); });
    buildRows.set(id, r);
    return r;
  }

  function renderBuilds(builds) {
    lastBuilds = builds;
    const queue = $('queue').tBodies[0];
    const recent = $('recent').tBodies[0];
    const seen = new Set();
    let running = 0; let finished = 0;
    for (const b of builds) {
      const id = String(b.buildId || '');
      seen.add(id);
      const r = buildRow(id);
      const st = displayState(b);
      setText(r.id, id);
      setText(r.fleet, b.fleet || '');
      setText(r.user, b.user || '');
      if (r.state.dataset.state !== st) {
        r.state.dataset.state = st;
        r.state.replaceChildren(el('span', 'state ' + st, st));
      }
      const hosts = hostsOf(id);
      setText(r.host, hosts.length ? hosts.join(', ') : '—');
      setText(r.services, (b.services || []).join(', '));
      setText(r.started, fmtTime(b.createdAt));
      setText(r.duration, fmtDuration(b.createdAt, b.finishedAt));
      r.tr.classList.toggle('selected', id === current.id);
      if (stateName(b.state) === 'running') { running++; queue.append(r.tr); } else { finished++; recent.append(r.tr); }
      if (id === current.id) showBuild(b);
    }
    for (const [id, r] of buildRows) {
      if (!seen.has(id)) { r.tr.remove(); buildRows.delete(id); }
    }
    $('queue-empty').hidden = running > 0;
    $('recent-empty').hidden = finished > 0;
    setText($('queue-summary'), running ? '(' + running + ' running)' : '');
    setText($('recent-summary'), finished ? '(last ' + finished + ')' : '');
  }

  // ---- one build: its details and live log -------------------------------------

  const current = { id: '', build: null, ctl: null, finished: false, lines: 0, retries: 0 };

  function select(id) {
    if (location.hash !== '#build=' + encodeURIComponent(id)) location.hash = 'build=' + encodeURIComponent(id);
    else openBuild(id);
  }

  function selectedFromHash() {
    const m = /^#build=(.+)$/.exec(location.hash);
    if (!m) return '';
    try { return decodeURIComponent(m[1]); } catch (_) { return ''; }
  }

  function closeBuild() {
    if (current.ctl) current.ctl.abort();
    current.id = ''; current.build = null; current.ctl = null;
    $('build').hidden = true;
    $('log').replaceChildren();
    for (const r of buildRows.values()) r.tr.classList.remove('selected');
  }

  function openBuild(id) {
    if (!id) { closeBuild(); return; }
    if (current.id === id && current.ctl) return;
    closeBuild();
    current.id = id;
    current.retries = 0;
    $('build').hidden = false;
    setText($('build-id'), id);
    setText($('build-error'), '');
    hideCancelConfirm();
    const b = lastBuilds && lastBuilds.find((x) => x.buildId === id);
    if (b) showBuild(b);
    else fetchBuild(id);
    for (const [bid, r] of buildRows) r.tr.classList.toggle('selected', bid === id);
    follow(id);
  }

  async function fetchBuild(id) {
    try {
      const res = await api('GET', '/v1/builds/' + encodeURIComponent(id));
      if (current.id === id && res.build) showBuild(res.build);
    } catch (e) {
      if (current.id === id) failed(e, 'Build ' + id, $('build-error'));
    }
  }

  function meta(label, value) {
    return el('div', '', el('dt', '', label), el('dd', '', value));
  }

  function showBuild(b) {
    current.build = b;
    const st = displayState(b);
    const badge = $('build-state');
    badge.className = 'state ' + st;
    setText(badge, st);
    const hosts = hostsOf(b.buildId);
    const items = [
      meta('Fleet', b.fleet || ''), meta('User', b.user || ''),
      meta('Release', String(b.releaseId || '')), meta('Commit', b.commit || ''),
      meta('Services', (b.services || []).join(', ')),
      meta('Host', hosts.length ? hosts.join(', ') : '—'),
      meta('Started', fmtTime(b.createdAt)), meta('Duration', fmtDuration(b.createdAt, b.finishedAt)),
    ];
    $('build-meta').replaceChildren(...items);
    setText($('build-error'), b.error || '');
    const running = stateName(b.state) === 'running';
    $('cancel').hidden = !running || !$('cancel-confirm').hidden;
    if (!running) hideCancelConfirm();
  }

  // The CLI's colours for an event's level (services/ingest/gateway/render.go).
  function tagFor(service, level) {
    switch (level) {
      case 'LEVEL_INFO': return ['[Info]', 'info'];
      case 'LEVEL_SUCCESS': return ['[Success]', 'success'];
      case 'LEVEL_WARN': return ['[Warn]', 'warn'];
      case 'LEVEL_DELTA': return ['[Delta]', 'delta'];
      case 'LEVEL_ERROR': return [service ? '[' + service + ']' : '[Error]', 'err'];
      case 'LEVEL_OUTPUT': return ['[' + service + ']', 'output'];
      default: return [null, null];
    }
  }

  function appendLog(service, log) {
    const box = $('log');
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    const level = log.level || 'LEVEL_UNSPECIFIED';
    const [tag, cls] = tagFor(service || '', level);
    const text = clean(log.text);
    const last = box.lastElementChild;
    const replaceable = level === 'LEVEL_OUTPUT' || level === 'LEVEL_UNSPECIFIED';
    if (log.replace && last && last.dataset.replaceable === '1' && last.dataset.service === (service || '')) {
      setText(last.lastChild, text); // a progress line redrawn, as balena-cli does
    } else {
      const line = el('div', 'line' + (level === 'LEVEL_ERROR' ? ' is-error' : ''));
      line.dataset.level = level;
      line.dataset.service = service || '';
      if (replaceable) line.dataset.replaceable = '1';
      if (tag) line.append(el('span', 'tag ' + cls, tag));
      line.append(el('span', 'text', text));
      box.append(line);
      if (++current.lines > MAX_LOG_LINES) { box.firstElementChild.remove(); current.lines--; }
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  async function follow(id) {
    const ctl = new AbortController();
    current.ctl = ctl;
    current.finished = false;
    current.lines = 0;
    $('log').replaceChildren();
    setText($('log-status'), 'Following the log…');
    const mine = session;
    try {
      await readEvents(id, ctl.signal, (ev) => {
        if (ctl.signal.aborted) return;
        if (ev.log) {
          noteLog(id, ev.service, ev.log);
          appendLog(ev.service, ev.log);
        } else if (ev.job) {
          noteJob(id, ev.service, ev.job);
          if (current.build) showBuild(current.build);
        } else if (ev.finished) {
          current.finished = true;
          const st = stateName(ev.finished.state);
          setText($('log-status'), 'The build ended: ' + st + (ev.finished.error ? ' (' + clean(ev.finished.error) + ')' : ''));
          refreshNow();
        }
      });
      if (ctl.signal.aborted || current.ctl !== ctl) return;
      if (current.finished || (current.build && stateName(current.build.state) !== 'running')) {
        if (!current.finished) setText($('log-status'), 'End of the log.');
        current.ctl = null;
        return;
      }
      throw new Error('the log stream ended');
    } catch (e) {
      if (ctl.signal.aborted || current.ctl !== ctl || mine !== session) return;
      if (e instanceof AuthError) { signOut('The operator token was refused.'); return; }
      current.ctl = null;
      if (current.retries++ < 5) {
        setText($('log-status'), 'The log stream broke (' + e.message + '); reconnecting…');
        setTimeout(() => { if (current.id === id && !current.ctl && mine === session) follow(id); }, 2000);
      } else {
        setText($('log-status'), 'Cannot follow the log: ' + e.message);
      }
    }
  }

  function hideCancelConfirm() {
    $('cancel-confirm').hidden = true;
    $('cancel-reason').value = '';
    $('cancel').hidden = !(current.build && stateName(current.build.state) === 'running');
  }

  async function cancelBuild() {
    const id = current.id;
    if (!id) return;
    const reason = $('cancel-reason').value.trim() || 'from the build page';
    const yes = $('cancel-yes');
    yes.disabled = true;
    try {
      await api('POST', '/v1/builds/' + encodeURIComponent(id) + ':cancel', { reason });
      status('Cancelled build ' + id);
      hideCancelConfirm();
      $('cancel').hidden = true;
    } catch (e) {
      failed(e, 'Cancel build ' + id, $('build-error'));
    } finally {
      yes.disabled = false;
      refreshNow();
    }
  }

  // ---- refresh loop, status, sign-in -----------------------------------------

  let timer = 0; let refreshing = false; let again = false;

  async function refresh() {
    const mine = session;
    if (!token) return;
    if (refreshing) { again = true; return; }
    refreshing = true;
    clearTimeout(timer);
    try {
      const [b, h] = await Promise.all([api('GET', '/v1/builds?limit=50'), api('GET', '/v1/hosts')]);
      if (mine !== session) return;
      renderHosts(h.hosts || []);
      for (const x of b.builds || []) {
        for (const j of x.jobs || []) noteJob(x.buildId, j.service, { state: j.state, host: j.host });
      }
      renderBuilds(b.builds || []);
      if (current.id && !(b.builds || []).some((x) => x.buildId === current.id)) fetchBuild(current.id);
      scanHosts(b.builds || []);
      status('Updated ' + fmtTime(new Date().toISOString()));
    } catch (e) {
      if (mine === session) failed(e, 'Refresh');
    } finally {
      refreshing = false;
      if (mine === session && token) {
        if (again) { again = false; timer = setTimeout(refresh, 0); } else timer = setTimeout(refresh, REFRESH_MS);
      }
    }
  }

  function refreshNow() { clearTimeout(timer); refresh(); }

  function status(msg) { setText($('status'), msg); }

  function failed(e, what, where) {
    if (e instanceof AuthError) { signOut('The operator token was refused.'); return; }
    const msg = what + ' failed: ' + e.message;
    if (where) setText(where, msg); else status(msg);
  }

  function signedIn() {
    session++;
    $('login').hidden = true;
    $('app').hidden = false;
    $('session').hidden = false;
    refresh();
    openBuild(selectedFromHash());
  }

  function signOut(why) {
    session++;
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    closeBuild();
    jobs.clear(); scans.clear();
    for (const r of hostRows.values()) r.tr.remove();
    hostRows.clear();
    for (const r of buildRows.values()) r.tr.remove();
    buildRows.clear();
    lastBuilds = null;
    $('app').hidden = true;
    $('session').hidden = true;
    $('login').hidden = false;
    setText($('login-error'), why || '');
    $('token').focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const input = $('token');
    const candidate = input.value.trim();
    if (!candidate) return;
    $('login-submit').disabled = true;
    token = candidate;
    try {
      await api('GET', '/v1/hosts'); // proves the token
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = '';
      setText($('login-error'), '');
      signedIn();
    } catch (e) {
      token = '';
      setText($('login-error'), e instanceof AuthError ? 'The operator token was refused.' : 'Cannot reach the builder: ' + e.message);
    } finally {
      $('login-submit').disabled = false;
    }
  }

  function init() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => signOut(''));
    $('close-build').addEventListener('click', () => { history.replaceState(null, '', location.pathname); closeBuild(); });
    $('cancel').addEventListener('click', () => {
      $('cancel').hidden = true;
      $('cancel-confirm').hidden = false;
      $('cancel-reason').focus();
    });
    $('cancel-no').addEventListener('click', hideCancelConfirm);
    $('cancel-yes').addEventListener('click', cancelBuild);
    $('cancel-reason').addEventListener('keydown', (e) => { if (e.key === 'Enter') cancelBuild(); });
    window.addEventListener('hashchange', () => { if (token) openBuild(selectedFromHash()); });
    setInterval(() => { // durations of running builds tick between refreshes
      for (const [id, r] of buildRows) {
        const b = lastBuilds && lastBuilds.find((x) => x.buildId === id);
        if (b && !b.finishedAt) setText(r.duration, fmtDuration(b.createdAt, null));
      }
      if (current.build && !current.build.finishedAt) showBuild(current.build);
    }, 1000);
    if (token) signedIn(); else signOut('');
  }

  init();
})();
