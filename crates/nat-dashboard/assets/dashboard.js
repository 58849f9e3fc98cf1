// nat-orchestrator dashboard: hand-written, no dependencies, no build step.
// Polls the JSON endpoints and draws tables, SVG charts and the server-rendered cell diagrams.
(function () {
  'use strict';

  var SVG_NS = 'http://www.w3.org/2000/svg';
  var INDEX_REFRESH_MS = 5000;
  var JOB_REFRESH_MS = 3000;

  function $(sel) { return document.querySelector(sel); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svgEl(tag, attrs, children) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      if (attrs[k] === null || attrs[k] === undefined) return;
      if (k === 'text') node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
  }

  function append(node, children) {
    if (children === undefined || children === null) return;
    if (!Array.isArray(children)) children = [children];
    children.forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
  }

  // ----- formatting ----------------------------------------------------------------------------

  function isNum(x) { return typeof x === 'number' && isFinite(x); }
  function pct(x) { return isNum(x) ? (x * 100).toFixed(2) + '%' : '–'; }
  function signed(x, digits) { return isNum(x) ? (x >= 0 ? '+' : '') + x.toFixed(digits) : '–'; }
  function count(x) {
    if (!isNum(x)) return '–';
    var a = Math.abs(x);
    if (a >= 1e9) return (x / 1e9).toFixed(2) + 'G';
    if (a >= 1e6) return (x / 1e6).toFixed(2) + 'M';
    if (a >= 1e4) return (x / 1e3).toFixed(1) + 'k';
    return String(Math.round(x));
  }
  function duration(s) {
    if (!isNum(s)) return '–';
    s = Math.max(0, Math.round(s));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + (s % 60) + 's';
    return s + 's';
  }
  function clock(ms) {
    var d = new Date(ms);
    function two(n) { return (n < 10 ? '0' : '') + n; }
    return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
  }
  function shortId(id) { return String(id).slice(0, 8); }

  function badge(state) { return el('span', { 'class': 'badge state-' + state, text: state }); }

  function bar(fraction, label) {
    var f = isNum(fraction) ? Math.max(0, Math.min(1, fraction)) : 0;
    return el('div', null, [
      el('div', { 'class': 'bar' }, el('span', { style: 'width:' + (f * 100).toFixed(1) + '%' })),
      el('div', { 'class': 'bar-label', text: label || (f * 100).toFixed(0) + '%' })
    ]);
  }

  function tile(label, value, cls) {
    return el('div', { 'class': 'tile' }, [
      el('div', { 'class': 'label', text: label }),
      el('div', { 'class': 'value' + (cls ? ' ' + cls : ''), text: value })
    ]);
  }

  function replaceChildren(node, children) {
    while (node.firstChild) node.removeChild(node.firstChild);
    append(node, children);
  }

  function setStatus(ok, text) {
    var s = $('#status');
    if (!s) return;
    s.textContent = text;
    s.className = 'status' + (ok ? '' : ' error');
  }

  function getJSON(url) {
    return fetch(url, { cache: 'no-store' }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
        return body;
      });
    });
  }

  function poll(fn, every) {
    function tick() {
      fn().then(function () {
        setStatus(true, 'updated ' + clock(Date.now()) + ' · every ' + every / 1000 + ' s');
      }).catch(function (e) {
        setStatus(false, 'refresh failed: ' + e.message);
      }).then(function () { setTimeout(tick, every); });
    }
    tick();
  }

  // ----- charts --------------------------------------------------------------------------------

  // A line chart as an inline SVG. series: [{name, cls, points: [[x, y], ...], step, dots}].
  function lineChart(id, series, opts) {
    var W = 640, H = 260, L = 56, R = 16, T = 30, B = 34;
    var svg = svgEl('svg', { id: id, 'class': 'chart', viewBox: '0 0 ' + W + ' ' + H, role: 'img',
      'aria-label': opts.title || id });
    var all = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (isNum(p[1])) all.push(p); }); });
    if (all.length === 0) {
      svg.appendChild(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', 'class': 'empty-text',
        text: opts.empty || 'no data yet' }));
      return svg;
    }
    var xs = all.map(function (p) { return p[0]; }), ys = all.map(function (p) { return p[1]; });
    if (opts.xMin !== undefined) xs.push(opts.xMin);
    if (opts.extendTo !== undefined) xs.push(opts.extendTo);
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (opts.yMin !== undefined) y0 = Math.min(y0, opts.yMin);
    if (opts.yMax !== undefined) y1 = Math.max(y1, opts.yMax);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    var pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.1 || 0.01;
    y0 -= pad; y1 += pad;
    function sx(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function sy(y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); }

    var axis = svgEl('g', { 'class': 'axis' });
    for (var i = 0; i <= 4; i++) {
      var yv = y0 + (y1 - y0) * i / 4, yy = sy(yv);
      axis.appendChild(svgEl('line', { x1: L, x2: W - R, y1: yy, y2: yy, 'class': 'grid-line' }));
      axis.appendChild(svgEl('text', { x: L - 6, y: yy + 4, 'text-anchor': 'end', text: opts.yFormat(yv) }));
    }
    var ticks = Math.min(6, Math.max(1, Math.round(x1 - x0)));
    for (var j = 0; j <= ticks; j++) {
      var xv = x0 + (x1 - x0) * j / ticks;
      axis.appendChild(svgEl('text', { x: sx(xv), y: H - B + 16, 'text-anchor': 'middle', text: opts.xFormat(xv) }));
    }
    axis.appendChild(svgEl('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle', text: opts.xLabel }));
    if (y0 < 0 && y1 > 0 && opts.zeroLine) {
      axis.appendChild(svgEl('line', { x1: L, x2: W - R, y1: sy(0), y2: sy(0), stroke: '#adb5bd', 'stroke-width': 1 }));
    }
    svg.appendChild(axis);

    var lx = L;
    series.forEach(function (s) {
      (s.dots || []).forEach(function (p) {
        if (isNum(p[1])) svg.appendChild(svgEl('circle', { cx: sx(p[0]), cy: sy(p[1]), r: 2.6, 'class': 'dot ' + s.cls }));
      });
      var pts = s.points.filter(function (p) { return isNum(p[1]); });
      if (pts.length === 0) return;
      var d = '';
      pts.forEach(function (p, k) {
        if (k === 0) d += 'M' + sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1);
        else if (s.step) d += ' H' + sx(p[0]).toFixed(1) + ' V' + sy(p[1]).toFixed(1);
        else d += ' L' + sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1);
      });
      if (s.step && opts.extendTo !== undefined) d += ' H' + sx(opts.extendTo).toFixed(1);
      svg.appendChild(svgEl('path', { d: d, 'class': 'series ' + s.cls }));
      if (pts.length === 1) {
        svg.appendChild(svgEl('circle', { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3.5, 'class': 'series ' + s.cls }));
      }
      svg.appendChild(svgEl('line', { x1: lx, x2: lx + 22, y1: 14, y2: 14, 'class': 'series ' + s.cls }));
      svg.appendChild(svgEl('text', { x: lx + 28, y: 18, 'class': 'legend-text', text: s.name }));
      lx += 40 + s.name.length * 7;
    });
    return svg;
  }

  // ----- index page ----------------------------------------------------------------------------

  function renderJobs(rows) {
    var body = $('#jobs-table tbody');
    $('#jobs-empty').hidden = rows.length > 0;
    replaceChildren(body, rows.map(function (j) {
      var t = j.tasks;
      var label = (j.name ? j.name + ' · ' : '') + shortId(j.id);
      return el('tr', { 'data-job': j.id }, [
        el('td', null, [el('a', { href: '/jobs/' + j.id, text: label }),
          j.dataset ? el('div', { 'class': 'muted small', text: j.dataset }) : null,
          j.document_error ? el('div', { 'class': 'small error', text: j.document_error }) : null]),
        el('td', { text: j.kind }),
        el('td', null, badge(j.state)),
        el('td', null, bar(j.progress)),
        el('td', { text: t.done + '/' + t.total + (t.failed ? ' · ' + t.failed + ' failed' : '') }),
        el('td', { 'class': 'num ' + (j.best_reward > 0 ? 'pos' : j.best_reward < 0 ? 'neg' : ''),
          text: signed(j.best_reward, 4) }),
        el('td', { 'class': 'num', text: pct(j.best_accuracy) }),
        el('td', { 'class': 'num', text: isNum(j.policy_version) ? 'v' + j.policy_version : '–' }),
        el('td', { 'class': 'num', text: duration(j.elapsed_seconds) })
      ]);
    }));
  }

  function renderWorkers(rows) {
    var body = $('#workers-table tbody');
    $('#workers-empty').hidden = rows.length > 0;
    replaceChildren(body, rows.map(function (w) {
      var devices = (w.devices.length ? w.devices.join(', ') : 'cpu') + (w.gpu_model ? ' · ' + w.gpu_model : '');
      return el('tr', { 'data-worker': w.id }, [
        el('td', null, [el('strong', { text: w.name }), el('div', { 'class': 'muted small', text: shortId(w.id) })]),
        el('td', null, el('span', { 'class': 'badge ' + (w.healthy ? 'health-ok' : 'health-bad'),
          text: w.healthy ? 'healthy' : (w.state === 'lost' ? 'lost' : 'silent') })),
        el('td', { text: devices }),
        el('td', { text: w.current_tasks.length + '/' + w.slots }),
        el('td', null, w.current_tasks.length ? w.current_tasks.map(function (t) {
          return el('a', { 'class': 'task-chip', href: '/jobs/' + t.job_id,
            text: t.kind + ' ' + shortId(t.task_id) + (isNum(t.fraction) ? ' · ' + Math.round(t.fraction * 100) + '%' : '') +
              (t.progress_error ? ' · ' + t.progress_error : '') });
        }) : el('span', { 'class': 'muted', text: 'idle' })),
        el('td', { 'class': 'num', text: isNum(w.images_per_second) ? w.images_per_second.toFixed(0) : '–' }),
        el('td', { 'class': 'num', text: String(w.tasks_finished) }),
        el('td', { 'class': 'num', text: duration(w.heartbeat_age_seconds) + ' ago' })
      ]);
    }));
  }

  function renderFleet(jobs, workers) {
    var running = jobs.filter(function (j) { return j.state === 'running'; }).length;
    var queued = jobs.filter(function (j) { return j.state === 'queued'; }).length;
    var healthy = workers.filter(function (w) { return w.healthy; }).length;
    var busy = workers.reduce(function (n, w) { return n + w.current_tasks.length; }, 0);
    var slots = workers.reduce(function (n, w) { return n + w.slots; }, 0);
    var ips = workers.reduce(function (n, w) { return n + (isNum(w.images_per_second) ? w.images_per_second : 0); }, 0);
    replaceChildren($('#fleet-tiles'), [
      tile('Running jobs', String(running)),
      tile('Queued jobs', String(queued)),
      tile('Healthy workers', healthy + '/' + workers.length, healthy < workers.length ? 'bad' : 'good'),
      tile('Busy slots', busy + '/' + slots),
      tile('Fleet images/s', ips ? ips.toFixed(0) : '–')
    ]);
  }

  function indexPage() {
    poll(function () {
      return Promise.all([getJSON('/api/jobs'), getJSON('/api/workers')]).then(function (r) {
        renderJobs(r[0]);
        renderWorkers(r[1]);
        renderFleet(r[0], r[1]);
      });
    }, INDEX_REFRESH_MS);
  }

  // ----- job page ------------------------------------------------------------------------------

  var shownCells = '';

  // What the job page has received so far. After the first request the page asks only for what
  // is new (`?after=<last_seq>`) and appends it; the server reads only the new events too.
  var EVENTS_SHOWN = 25;
  var seen = { cursor: null, rewards: [], accuracy: [], events: [], refreshes: 0 };

  function mergeJob(d) {
    if (seen.cursor === null || !d.after) {
      seen.rewards = d.rewards.slice();
      seen.accuracy = d.accuracy.slice();
      seen.events = d.events.slice();
    } else {
      seen.rewards = seen.rewards.concat(d.rewards);
      var last = seen.accuracy.length ? seen.accuracy[seen.accuracy.length - 1].accuracy : -Infinity;
      d.accuracy.forEach(function (p) {
        if (p.accuracy > last) { seen.accuracy.push(p); last = p.accuracy; }
      });
      seen.events = d.events.concat(seen.events).slice(0, EVENTS_SHOWN);
    }
    seen.cursor = d.last_seq;
    // The server merges a long job's reward points (at most 1,000, see `reward_bucket`); a page
    // open for long asks for the merged chart again instead of growing without bound.
    if (seen.rewards.length > 2000) seen.cursor = null;
    seen.refreshes += 1;
    document.body.setAttribute('data-cursor', String(seen.cursor));
    document.body.setAttribute('data-refreshes', String(seen.refreshes));
  }

  function renderCells(d) {
    var key = d.input_index + '|' + d.cells.map(function (c) { return c.best_svg; }).join('');
    if (key === shownCells) return;
    shownCells = key;
    var box = $('#cells');
    if (d.cells.length === 0) {
      replaceChildren(box, el('p', { 'class': 'empty', text: 'The input architecture of this job is not known.' }));
      return;
    }
    replaceChildren(box, d.cells.map(function (c) {
      var row = el('div', { 'class': 'cell-row', 'data-cell': c.kind }, [
        el('div', { 'class': 'cell-kind' }, [c.kind,
          el('span', { 'class': 'muted', text: c.changes.length + ' edge' + (c.changes.length === 1 ? '' : 's') + ' changed' })]),
        el('figure', { 'class': 'input' }, el('figcaption', { text: 'input' })),
        el('figure', { 'class': 'best' }, el('figcaption', { text: d.has_best ? 'best transformation' : 'best (none yet)' }))
      ]);
      // The SVGs are rendered and escaped by the server (nat_dashboard::diagram).
      row.querySelector('figure.input').insertAdjacentHTML('beforeend', c.input_svg);
      row.querySelector('figure.best').insertAdjacentHTML('beforeend', c.best_svg);
      return row;
    }));
    $('#cells-note').textContent = d.has_best ? '' : 'no transformation found yet';
  }

  // NAT's answer (verdict, recommendation, final evaluation, control) and whether the policy
  // learned: HTML and SVG rendered and escaped by the server (nat_dashboard::answer).
  var shownAnswer = null;

  function renderAnswer(d) {
    var a = d.answer, l = d.learning;
    var key = (a ? a.html : '') + '|' + (l ? l.curve_svg + l.html : '');
    if (key === shownAnswer) return;
    shownAnswer = key;
    var card = $('#answer-card');
    card.hidden = !(a && a.html);
    $('#answer-input').textContent = '#' + d.input_index;
    $('#answer').innerHTML = a && a.html ? a.html : '';
    var lcard = $('#learning-card');
    lcard.hidden = !l;
    $('#learning-chart-box').innerHTML = l ? l.curve_svg : '';
    $('#learning').innerHTML = l ? l.html : '';
  }

  function renderCompare(rows) {
    replaceChildren($('#compare-table tbody'), rows.map(function (r) {
      var f = r.format === 'percent' ? pct : r.format === 'count' ? count : function (x) { return isNum(x) ? String(x) : '–'; };
      var delta = isNum(r.before) && isNum(r.after) ? r.after - r.before : null;
      var dtext = '–';
      if (delta !== null) {
        if (r.format === 'percent') dtext = signed(delta * 100, 2) + ' pt';
        else if (r.format === 'count' && r.before) dtext = signed(delta / r.before * 100, 1) + '%';
        else dtext = signed(delta, 0);
      }
      var better = r.metric === 'accuracy' ? delta > 0 : delta < 0;
      return el('tr', null, [
        el('td', { text: r.metric }),
        el('td', { 'class': 'num', text: f(r.before) }),
        el('td', { 'class': 'num', text: f(r.after) }),
        el('td', { 'class': 'num ' + (delta && r.format !== 'number' ? (better ? 'pos' : 'neg') : ''), text: dtext })
      ]);
    }));
  }

  function renderEvents(events) {
    replaceChildren($('#events'), events.map(function (e) {
      return el('li', { 'class': 'kind-' + e.kind }, [
        el('span', { 'class': 'seq', text: '#' + e.seq }),
        el('span', { 'class': 'time', text: clock(e.t_ms) }),
        el('span', { 'class': 'text', text: e.summary })
      ]);
    }));
  }

  function renderJob(d) {
    mergeJob(d);
    var j = d.job;
    document.title = (j.name || shortId(j.id)) + ' · NAT orchestrator';
    replaceChildren($('#job-title'), [j.name || 'Job ' + shortId(j.id), ' ', badge(j.state)]);
    $('#job-subtitle').textContent = j.kind + (j.dataset ? ' on ' + j.dataset : '') +
      (j.dataset_shape ? ' (' + j.dataset_shape + ')' : '') + ' · ' + j.id +
      (j.error ? ' · ' + j.error : '') + (d.waiting_reason ? ' · waiting: ' + d.waiting_reason : '');
    replaceChildren($('#job-tiles'), [
      tile('Progress', Math.round(j.progress * 100) + '%'),
      tile('Tasks done', j.tasks.done + '/' + j.tasks.total),
      tile('Running tasks', String(d.tasks_running)),
      tile('Best reward', signed(j.best_reward, 4), j.best_reward > 0 ? 'good' : ''),
      tile('Best accuracy', pct(j.best_accuracy)),
      tile('Policy version', isNum(j.policy_version) ? 'v' + j.policy_version : '–'),
      tile('Elapsed', duration(j.elapsed_seconds)),
      tile('Failed tasks', String(j.tasks.failed), j.tasks.failed ? 'bad' : '')
    ]);

    var rewardPts = seen.rewards.map(function (p) { return [p.policy_version, p.reward]; });
    var basePts = seen.rewards.map(function (p) { return [p.policy_version, p.baseline]; });
    var dots = [];
    seen.rewards.forEach(function (p) { p.rewards.forEach(function (r) { dots.push([p.policy_version, r]); }); });
    replaceChildren($('#reward-chart-box'), lineChart('reward-chart', [
      { name: 'mean reward', cls: 'reward', points: rewardPts, dots: dots },
      { name: 'baseline', cls: 'baseline', points: basePts }
    ], { xLabel: 'policy version', xFormat: function (x) { return 'v' + Math.round(x); },
      yFormat: function (y) { return signed(y, 3); }, zeroLine: true, empty: 'no policy update yet' }));

    var start = j.created_at_ms;
    var end = ((j.finished_at_ms || Date.now()) - start) / 60000;
    var accPts = seen.accuracy.map(function (p) { return [(p.t_ms - start) / 60000, p.accuracy]; });
    replaceChildren($('#accuracy-chart-box'), lineChart('accuracy-chart', [
      { name: 'best accuracy', cls: 'accuracy', points: accPts, step: true }
    ], { xLabel: 'minutes since submission', xFormat: function (x) { return x.toFixed(x < 10 ? 1 : 0); },
      yFormat: function (y) { return (y * 100).toFixed(1) + '%'; }, xMin: 0, extendTo: end, empty: 'no accuracy measured yet' }));

    var picker = $('#input-picker');
    if (d.inputs > 1) {
      picker.hidden = false;
      var sel = $('#input-select');
      if (sel.options.length !== d.inputs) {
        replaceChildren(sel, Array.apply(null, Array(d.inputs)).map(function (_, i) {
          return el('option', { value: String(i), text: '#' + i });
        }));
        sel.value = String(d.input_index);
      }
    }
    renderAnswer(d);
    renderCells(d);
    renderCompare(d.table);
    renderEvents(seen.events);
  }

  function jobPage() {
    var parts = location.pathname.split('/').filter(Boolean);
    var id = decodeURIComponent(parts[parts.length - 1] || '');
    var input = new URLSearchParams(location.search).get('input') || '0';
    var base = '/api/jobs/' + encodeURIComponent(id) + '/diagram.';
    $('#download-svg').href = base + 'svg?input=' + encodeURIComponent(input);
    $('#download-dot').href = base + 'dot?input=' + encodeURIComponent(input);
    var sel = $('#input-select');
    sel.addEventListener('change', function () {
      var u = new URL(location.href);
      u.searchParams.set('input', sel.value);
      location.href = u.toString();
    });
    poll(function () {
      var url = '/api/jobs/' + encodeURIComponent(id) + '?input=' + encodeURIComponent(input);
      if (seen.cursor !== null) url += '&after=' + encodeURIComponent(seen.cursor);
      return getJSON(url).then(renderJob);
    }, JOB_REFRESH_MS);
  }

  var page = document.body.getAttribute('data-page');
  if (page === 'index') indexPage();
  else if (page === 'job') jobPage();
})();
