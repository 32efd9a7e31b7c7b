// Vigil console: the little behaviour the server-rendered pages need.
// No inline script anywhere (the CSP forbids it); everything is wired here.
'use strict';

(function () {
  const csrf = () => document.body.dataset.csrf || '';

  // Countdowns: every [data-expires] shows the time left.
  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll('[data-expires]')) {
      const left = Math.round((Date.parse(el.dataset.expires) - now) / 1000);
      if (Number.isNaN(left)) continue;
      if (left <= 0) {
        el.textContent = 'expired';
        el.classList.add('late');
        continue;
      }
      const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = 'expires in ' + (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + s + 's';
      el.classList.toggle('soon', left < 120);
    }
  }

  // The Decision Desk: server-sent events carry the whole ordered list of
  // cards; cards already shown are kept (with whatever was typed in them).
  function desk(section) {
    const live = document.getElementById('live');
    const empty = document.getElementById('desk-empty');
    const es = new EventSource(section.dataset.stream);
    es.addEventListener('open', () => { live.textContent = 'live'; live.classList.add('on'); });
    es.addEventListener('error', () => { live.textContent = 'reconnecting…'; live.classList.remove('on'); });
    es.addEventListener('problem', (ev) => {
      const p = JSON.parse(ev.data);
      live.textContent = p.message;
      es.close();
      if (p.status === 401) window.location.assign('/console/sign-in');
    });
    es.addEventListener('cards', (ev) => {
      const cards = JSON.parse(ev.data).cards;
      const want = new Set(cards.map((c) => c.id));
      for (const el of Array.from(section.children)) {
        if (!want.has(el.dataset.id)) el.remove();
      }
      let prev = null;
      for (const c of cards) {
        let el = document.getElementById('card-' + c.id);
        if (!el) {
          const tpl = document.createElement('template');
          tpl.innerHTML = c.html;
          el = tpl.content.firstElementChild;
          el.classList.add('new');
        }
        const at = prev ? prev.nextElementSibling : section.firstElementChild;
        if (el !== at) section.insertBefore(el, at);
        prev = el;
      }
      empty.hidden = cards.length > 0;
      section.dataset.count = String(cards.length);
      tick();
    });
  }

  // Policy editor: compile on the server as the author types.
  function editor(area) {
    const status = document.getElementById('policy-status');
    let timer = null, seq = 0;
    async function check() {
      const mine = ++seq;
      status.textContent = 'checking…';
      status.className = 'status';
      try {
        const res = await fetch(area.dataset.validate, {
          method: 'POST', body: area.value, credentials: 'same-origin',
          headers: { 'Content-Type': 'application/yaml', 'X-CSRF-Token': csrf(), 'Accept': 'application/json' },
        });
        const body = await res.json();
        if (mine !== seq) return;
        const ok = res.ok && body.valid;
        status.textContent = ok ? '✓ compiles' + (body.rules !== undefined ? ' (' + body.rules + ' rules)' : '') : '✗ ' + (body.message || (body.error && body.error.message) || 'HTTP ' + res.status);
        status.className = 'status ' + (ok ? 'ok' : 'bad');
        area.setAttribute('aria-invalid', ok ? 'false' : 'true');
      } catch (e) {
        if (mine === seq) { status.textContent = 'could not check: ' + e.message; status.className = 'status bad'; }
      }
    }
    area.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(check, 300); });
    check();
  }

  document.addEventListener('DOMContentLoaded', () => {
    tick();
    setInterval(tick, 1000);
    const d = document.getElementById('desk');
    if (d && d.dataset.stream) desk(d);
    const area = document.querySelector('textarea[data-validate]');
    if (area) editor(area);
  });
})();
