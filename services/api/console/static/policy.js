// Vigil console: the policy editor's test cases and replay. The server
// compiles and evaluates (POST /v1/policies/test and /replay through the
// console); this only sends the editor's text and shows the answers, built
// with DOM calls (never innerHTML: the values come from recorded data).
'use strict';

(function () {
  const csrf = () => document.body.dataset.csrf || '';

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) {
      if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    }
    return e;
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: 'POST', body, credentials: 'same-origin',
      headers: { 'Content-Type': 'application/yaml', 'X-CSRF-Token': csrf(), 'Accept': 'application/json' },
    });
    if (res.status === 401) { window.location.assign('/console/sign-in'); }
    let data = {};
    try { data = await res.json(); } catch (e) { data = {}; }
    return { res, data };
  }

  // problem renders the error envelope: its message and each detail.
  function problem(data, res) {
    const err = data.error || {};
    const lines = [err.message || data.message || ('HTTP ' + res.status)];
    for (const d of err.details || []) lines.push((d.path ? d.path + ': ' : '') + d.message);
    return lines.join('\n');
  }

  function tests(area) {
    const status = document.getElementById('tests-status');
    const list = document.getElementById('test-results');
    let timer = null, seq = 0;
    async function run() {
      const mine = ++seq;
      status.textContent = 'running…';
      status.className = 'status';
      try {
        const { res, data } = await post(area.dataset.test, area.value);
        if (mine !== seq) return;
        list.replaceChildren();
        if (!res.ok || data.valid === false) {
          status.textContent = '✗ cannot run the tests: ' + problem(data, res);
          status.className = 'status bad';
          return;
        }
        const cases = data.cases || [];
        if (cases.length === 0) {
          status.textContent = 'no test cases: add a tests: list to the document';
          status.className = 'status';
          return;
        }
        status.textContent = (data.failed ? '✗ ' : '✓ ') + data.passed + ' passed, ' + data.failed + ' failed';
        status.className = 'status ' + (data.failed ? 'bad' : 'ok');
        for (const c of cases) {
          const d = c.decision || {};
          const rules = (d.matches || []).map((m) => (m.policyId ? m.policyId + '/' : '') + m.ruleId + ' (' + m.outcome + ')');
          const li = el('li', { class: 'case ' + (c.passed ? 'pass' : 'fail'), 'data-name': c.name, 'data-passed': String(c.passed) },
            el('span', { class: 'badge ' + (c.passed ? 'ok' : 'bad') }, c.passed ? 'PASS' : 'FAIL'), ' ',
            el('strong', {}, c.name), c.line ? el('span', { class: 'hint' }, ' (line ' + c.line + ')') : null);
          const dl = el('dl', {},
            el('dt', {}, 'want'), el('dd', { class: 'mono' }, c.want),
            el('dt', {}, 'got'), el('dd', { class: 'mono' }, c.got + (c.refused ? ' — ' + c.refused.join('; ') : '')),
            el('dt', {}, 'matched'), el('dd', { class: 'mono' }, rules.length ? rules.join(', ') : 'none'));
          li.append(dl);
          if (!c.passed) li.append(el('ul', { class: 'problems' }, ...c.problems.map((p) => el('li', {}, p))));
          for (const e of d.errors || []) li.append(el('p', { class: 'hint mono' }, 'rule error: ' + e));
          list.append(li);
        }
      } catch (e) {
        if (mine === seq) { status.textContent = 'could not run the tests: ' + e.message; status.className = 'status bad'; }
      }
    }
    area.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(run, 300); });
    run();
  }

  function outcome(o) {
    const s = o.decision + (o.reasonCodes && o.reasonCodes.length ? ' [' + o.reasonCodes.join(', ') + ']' : '');
    return s + (o.rules && o.rules.length ? ' · ' + o.rules.join(', ') : '') + (o.refused ? ' — ' + o.refused.join('; ') : '');
  }

  function replay(section, area) {
    const days = document.getElementById('replay-days');
    const button = document.getElementById('replay-run');
    const out = document.getElementById('replay-result');
    button.addEventListener('click', async () => {
      button.disabled = true;
      out.replaceChildren(el('p', {}, 'replaying…'));
      delete out.dataset.done;
      try {
        const { res, data } = await post(section.dataset.replay + '?days=' + encodeURIComponent(days.value), area.value);
        if (!res.ok || data.valid === false) {
          out.replaceChildren(el('p', { class: 'error' }, problem(data, res)));
          return;
        }
        const summary = el('p', { class: 'score' }, data.examined + ' decisions of the last ' + data.days + ' days re-decided: ' +
          data.changed + ' would change, ' + data.unchanged + ' would not' +
          (data.reasonsChanged ? ' (' + data.reasonsChanged + ' with other reason codes)' : '') + '.');
        const parts = [summary];
        if (data.byChange.length) {
          parts.push(el('ul', { class: 'by-change' }, ...data.byChange.map((b) => el('li', {}, el('span', { class: 'mono' }, b.from + ' → ' + b.to), ': ' + b.count))));
        }
        if (data.truncated) parts.push(el('p', { class: 'hint' }, 'Only the newest ' + data.examined + ' decisions were replayed (the limit of one replay); older ones were not.'));
        if (data.ruleErrors) parts.push(el('p', { class: 'hint' }, 'Draft rules failed to evaluate on ' + data.ruleErrors + ' decisions (such a rule fails closed).'));
        if (data.undecodable) parts.push(el('p', { class: 'hint' }, data.undecodable + ' recorded decisions could not be read.'));
        if (data.changes.length) {
          const rows = data.changes.map((c) => el('tr', { 'data-decision': c.decisionId },
            el('td', {}, new Date(c.at).toISOString().replace('T', ' ').slice(0, 19)),
            el('td', { class: 'mono' }, c.decisionId),
            el('td', {}, c.agentId || '—'),
            el('td', {}, c.tool || '—'),
            el('td', { class: 'mono' }, outcome(c.old)),
            el('td', { class: 'mono' }, outcome(c.new)),
            el('td', {}, c.sessionId ? el('a', { href: '/console/sessions/' + encodeURIComponent(c.sessionId) }, c.sessionId) : '—')));
          const table = el('table', {},
            el('caption', { class: 'sr-only' }, 'Decisions that would change'),
            el('thead', {}, el('tr', {}, ...['Time (UTC)', 'Decision', 'Agent', 'Tool', 'Was', 'Would be', 'Session'].map((h) => el('th', { scope: 'col' }, h)))),
            el('tbody', {}, ...rows));
          parts.push(el('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Decisions that would change', tabindex: '0' }, table));
          if (data.changesTruncated) parts.push(el('p', { class: 'hint' }, 'The newest ' + data.changes.length + ' of ' + data.changed + ' changed decisions are listed.'));
        }
        out.replaceChildren(...parts);
        out.dataset.done = 'true';
      } catch (e) {
        out.replaceChildren(el('p', { class: 'error' }, 'could not replay: ' + e.message));
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    const area = document.querySelector('textarea[data-test]');
    if (area) tests(area);
    const section = document.getElementById('replay');
    if (area && section) replay(section, area);
  });
})();
