/* 掌上巡检: the grid worker's app. Report (上报) with photos, category, description, location
 * and severity; the outbox (待发送) of reports saved on the phone; my reports (我的上报) with
 * their case's steps; my tasks (我的待办): verification on site. Needs idb.js, photo.js and
 * queue.js. Plain ES2017, no framework; every text the worker reads is Chinese. */
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var state = { me: null, catalogue: null, photos: [], category: null, severity: null,
                location: null, watch: null, editing: null, vphotos: [], task: null,
                timer: null, tasks: [], mineTimer: null, preparing: Promise.resolve() };
  var VIEWS = ['loading', 'signin', 'report', 'outbox', 'mine', 'tasks', 'verify'];
  var MAX_PHOTOS = 9;

  /* --- small helpers ------------------------------------------------------------------ */

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') e.textContent = attrs[k];
      else if (k === 'class') e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function pad(n) { return (n < 10 ? '0' : '') + n; }

  function when(value) {
    if (!value) return '';
    var d = new Date(value);
    if (isNaN(d.getTime())) return '';
    return pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes());
  }

  function isoNow() {
    var d = new Date(), tz = -d.getTimezoneOffset();
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' + pad(d.getHours()) +
      ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + (tz >= 0 ? '+' : '-') +
      pad(Math.floor(Math.abs(tz) / 60)) + ':' + pad(Math.abs(tz) % 60);
  }

  function newId(prefix) {
    var b = new Uint8Array(16);
    (self.crypto || self.msCrypto).getRandomValues(b);
    return prefix + Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
  }

  function notice(text, ok) {
    var n = $('notice');
    n.textContent = text;
    n.className = 'notice' + (ok ? ' ok' : '');
    n.hidden = !text;
    if (text) setTimeout(function () { if (n.textContent === text) n.hidden = true; }, 6000);
  }

  function api(path, options) {
    options = options || {};
    options.credentials = 'same-origin';
    options.headers = options.headers || {};
    options.headers.Accept = 'application/json';
    return fetch(path, options).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        return { status: r.status, ok: r.ok, body: body || {} };
      });
    });
  }

  /* --- views -------------------------------------------------------------------------- */

  function show(name) {
    VIEWS.forEach(function (v) { $('view-' + v).hidden = v !== name; });
    ['report', 'outbox', 'mine', 'tasks'].forEach(function (t) {
      var tab = $('tab-' + t);
      if (t === name || (name === 'verify' && t === 'tasks')) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    });
    if (name === 'report') startLocating(); else stopLocating();
    if (name === 'outbox') renderOutbox();
    if (name === 'mine') loadMine();
    if (name === 'tasks') loadTasks();
    clearInterval(state.mineTimer);
    if (name === 'mine') state.mineTimer = setInterval(loadMine, 5000);
    window.scrollTo(0, 0);
  }

  function route() {
    var name = (location.hash || '#report').slice(1);
    if (!state.me) { show(name === 'outbox' ? 'outbox' : 'signin'); return; }  /* what waits stays visible */
    show(['report', 'outbox', 'mine', 'tasks'].indexOf(name) >= 0 ? name : 'report');
  }

  /* --- who is signed in, and the catalogue -------------------------------------------- */

  /* Who is signed in and the catalogue are kept in localStorage (read at once when the app
     opens, before any network); the CSRF token also in IndexedDB, for the service worker. */
  function keep(key, value) {
    try {
      if (value === null) localStorage.removeItem('gridflow.' + key);
      else localStorage.setItem('gridflow.' + key, JSON.stringify(value));
    } catch (e) { /* storage full or denied: the app still works online */ }
  }

  function kept(key) {
    try { return JSON.parse(localStorage.getItem('gridflow.' + key) || 'null'); } catch (e) { return null; }
  }

  function loadMe() {
    return api('/m/api/me').then(function (r) {
      if (r.ok) {
        state.me = r.body;
        keep('me', r.body);
        return GFDB.put('kv', r.body.csrf, 'csrf');
      }
      if (r.status === 401 || r.status === 403) {
        state.me = null;
        keep('me', null);
        return;
      }
      state.me = kept('me');
    }, function () {
      state.me = kept('me');
    });
  }

  function fetchCatalogue() {
    return api('/m/api/catalogue').then(function (r) {
      if (r.ok) { state.catalogue = r.body; keep('catalogue', r.body); }
    }, function () { /* offline: keep what we have */ });
  }

  function renderWho() {
    var me = state.me;
    $('who').textContent = '';
    if (!me) return;
    var grid = me.grids && me.grids[0] ? me.grids[0].name : '';
    $('who').appendChild(document.createTextNode(me.name + (grid ? ' · ' + grid : '') + ' '));
    var form = el('form', { method: 'post', action: '/m/sign-out', class: 'inline' });
    var out = el('button', { type: 'submit', class: 'sign-out', text: '退出' });
    form.appendChild(out);
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      fetch('/m/sign-out', { method: 'POST', credentials: 'same-origin',
                             headers: { 'X-CSRF-Token': me.csrf || '' } }).then(function () {
        keep('me', null);
        location.assign('/m/sign-in');
      });
    });
    $('who').appendChild(form);
  }

  /* --- the report form: photos ---------------------------------------------------------- */

  function addPhotos(files, list, render) {
    var room = MAX_PHOTOS - list.length;
    if (files.length > room) notice('最多' + MAX_PHOTOS + '张照片, 多出的未添加');
    var work = Promise.all(files.slice(0, Math.max(0, room)).map(GFPhoto.prepare)).then(function (done) {
      Array.prototype.push.apply(list, done);
      render();
      if (list === state.photos) useExifLocation();
    });
    /* a tap on 提交 while photos are still being scaled waits for them */
    state.preparing = Promise.all([state.preparing, work.catch(function () {})]);
    return work;
  }

  function thumbs(box, list, render) {
    box.textContent = '';
    list.forEach(function (p, i) {
      var img = el('img', { alt: '照片' + (i + 1) });
      if (p.thumb) img.src = p.thumb;
      var del = el('button', { type: 'button', text: '×', 'aria-label': '删除照片' + (i + 1) });
      del.addEventListener('click', function () { list.splice(i, 1); render(); });
      var cap = p.thumb ? null : el('figcaption', { text: '无法预览' });
      box.appendChild(el('figure', {}, [img, del, cap]));
    });
  }

  function renderPhotos() { thumbs($('thumbs'), state.photos, renderPhotos); }
  function renderVPhotos() { thumbs($('vthumbs'), state.vphotos, renderVPhotos); }

  function takeFiles(input, key, render) {
    input.addEventListener('change', function () {
      var files = Array.prototype.slice.call(input.files || []);
      input.value = '';
      addPhotos(files, state[key], render);
    });
  }

  /* --- category search ---------------------------------------------------------------- */

  function renderCategories() {
    var list = $('cat-list'), q = $('cat-search').value.trim().toLowerCase();
    list.textContent = '';
    if (!state.catalogue) { list.appendChild(el('li', { text: '类别目录未下载: 请联网后重试' })); return; }
    var found = state.catalogue.categories.filter(function (c) {
      if (!q) return true;
      return [c.name, c['class'], c.code].concat(c.keywords || []).some(function (t) {
        return String(t).toLowerCase().indexOf(q) >= 0;
      });
    });
    if (!found.length) list.appendChild(el('li', { text: '没有匹配的类别, 换个词试试' }));
    found.slice(0, 40).forEach(function (c) {
      var selected = state.category && state.category.code === c.code;
      var li = el('li', { role: 'option', 'aria-selected': selected ? 'true' : 'false', tabindex: '0',
                          'data-code': c.code },
                  [document.createTextNode(c.name), el('span', { class: 'code', text: c['class'] + ' ' + c.code })]);
      li.addEventListener('click', function () { chooseCategory(c); });
      li.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { ev.preventDefault(); chooseCategory(c); } });
      list.appendChild(li);
    });
  }

  function chooseCategory(c) {
    state.category = c;
    $('cat-chosen').textContent = c ? '已选: ' + c['class'] + ' / ' + c.name : '';
    var sev = $('sev');
    sev.textContent = '';
    var levels = c ? c.severities : [];
    $('f-severity').hidden = !levels || levels.length < 2;
    if (c && (state.severity === null || levels.indexOf(state.severity) < 0)) state.severity = c.default_severity;
    (levels || []).forEach(function (s) {
      var input = el('input', { type: 'radio', name: 'severity', value: String(s) });
      input.checked = s === state.severity;
      input.addEventListener('change', function () { state.severity = s; });
      var name = (state.catalogue && state.catalogue.severities[String(s)]) || String(s);
      sev.appendChild(el('label', {}, [input, el('span', { text: name })]));
    });
    renderCategories();
  }

  /* --- location ----------------------------------------------------------------------- */

  function inRing(ring, lon, lat) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > lat) !== (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function gridAt(lat, lon) {
    if (!state.catalogue) return null;
    var grids = state.catalogue.grids;
    for (var g = 0; g < grids.length; g++) {
      var b = grids[g].bbox;
      if (lon < b[0] || lat < b[1] || lon > b[2] || lat > b[3]) continue;
      for (var p = 0; p < grids[g].polygons.length; p++) {
        var poly = grids[g].polygons[p];
        if (inRing(poly[0], lon, lat) && !poly.slice(1).some(function (h) { return inRing(h, lon, lat); })) {
          return grids[g];
        }
      }
    }
    return null;
  }

  function renderLocation() {
    var box = $('loc'), loc = state.location;
    box.textContent = '';
    if (!loc) { box.appendChild(el('span', { text: state.locError || '正在定位…' })); return; }
    var grid = gridAt(loc.lat, loc.lon);
    var own = state.me && state.me.grids && state.me.grids[0];
    var where = grid ? grid.township + ' ' + grid.village + ' ' : '';
    box.appendChild(el('div', { class: 'grid', text: grid ? where + grid.name : '不在本县任何网格内' }));
    box.appendChild(el('div', { class: 'meta', text: loc.lat.toFixed(6) + ', ' + loc.lon.toFixed(6) +
      (loc.accuracy ? ' (精度约 ' + Math.round(loc.accuracy) + ' 米)' : '') +
      (loc.source === 'photo' ? ' · 来自照片的拍摄位置' : '') }));
    if (!grid) {
      box.appendChild(el('div', { class: 'off', text: '该位置不在本县网格内, 上报将不予立案; 请确认定位' }));
    } else if (own && grid.code !== own.code) {
      box.appendChild(el('div', { class: 'cross', text: '跨网格: 不在您负责的' + own.name + '内, 仍可上报' }));
    }
  }

  function startLocating() {
    if (state.watch !== null || !navigator.geolocation) {
      if (!navigator.geolocation) { state.locError = '此浏览器不支持定位'; renderLocation(); }
      return;
    }
    state.watch = navigator.geolocation.watchPosition(function (pos) {
      var c = pos.coords;
      if (state.location && state.location.source === 'gps' && state.location.accuracy < c.accuracy &&
          Date.now() - state.location.at < 30000) return;
      state.location = { lat: c.latitude, lon: c.longitude, accuracy: c.accuracy, source: 'gps', at: Date.now() };
      state.locError = null;
      renderLocation();
    }, function (err) {
      state.locError = err.code === 1 ? '未获得定位权限: 请在浏览器设置中允许定位, 或使用带位置的照片'
        : '暂时无法定位, 请到开阔处或稍后点“重新定位”';
      useExifLocation();
      renderLocation();
    }, { enableHighAccuracy: true, maximumAge: 10000, timeout: 20000 });
  }

  function stopLocating() {
    if (state.watch !== null && navigator.geolocation) navigator.geolocation.clearWatch(state.watch);
    state.watch = null;
  }

  function useExifLocation() {
    if (state.location && state.location.source === 'gps') return;
    var p = state.photos.filter(function (x) { return x.exif && x.exif.lat !== null; })[0];
    if (p) { state.location = { lat: p.exif.lat, lon: p.exif.lon, accuracy: null, source: 'photo', at: Date.now() }; renderLocation(); }
  }

  /* --- submitting a report ------------------------------------------------------------ */

  function showErrors(boxId, errors) {
    var box = $(boxId), ul = box.querySelector('ul');
    Array.prototype.forEach.call(document.querySelectorAll('.field-error'), function (e) { e.remove(); });
    Array.prototype.forEach.call(document.querySelectorAll('.has-error'), function (e) { e.classList.remove('has-error'); });
    ul.textContent = '';
    box.hidden = !errors.length;
    errors.forEach(function (e) {
      var a = el('a', { href: '#' + e.field, text: e.text });
      a.addEventListener('click', function (ev) { ev.preventDefault(); $(e.field).scrollIntoView(); });
      ul.appendChild(el('li', {}, [a]));
      var f = $(e.field);
      f.classList.add('has-error');
      f.insertBefore(el('p', { class: 'field-error', text: e.text }), f.children[1] || null);
    });
    if (errors.length) { box.focus(); window.scrollTo(0, 0); }
  }

  function capturedAt() {
    var limit = Date.now() + 5 * 60 * 1000, times = state.photos.map(function (p) {
      return p.exif && p.exif.taken_at;
    }).filter(function (t) { var d = Date.parse(t); return t && !isNaN(d) && d <= limit; }).sort();
    return times[0] || isoNow();
  }

  function submitReport(ev) {
    ev.preventDefault();
    state.preparing.then(saveReport);
  }

  function saveReport() {
    var errors = [];
    if (!state.photos.length) errors.push({ field: 'f-photos', text: '请至少拍摄或选择1张照片' });
    if (!state.category) errors.push({ field: 'f-category', text: '请选择问题类别' });
    var description = $('description').value.trim();
    if (!description) errors.push({ field: 'f-description', text: '请填写问题描述' });
    if (!state.location) errors.push({ field: 'f-location', text: '还没有定位: 请允许定位, 或稍候再提交' });
    showErrors('report-errors', errors);
    if (errors.length) return;
    var loc = state.location, grid = gridAt(loc.lat, loc.lon);
    var own = state.me.grids && state.me.grids[0];
    var report = {
      report_id: state.editing || newId('m-'), category_code: state.category.code, description: description,
      lat: Math.round(loc.lat * 1e6) / 1e6, lon: Math.round(loc.lon * 1e6) / 1e6, captured_at: capturedAt(),
      location_accuracy_m: loc.accuracy ? Math.round(loc.accuracy) : null, location_source: loc.source,
      photo_exif: state.photos.map(function (p) {
        return { taken_at: p.exif ? p.exif.taken_at : null, lat: p.exif ? p.exif.lat : null,
                 lon: p.exif ? p.exif.lon : null, original_bytes: p.original_bytes };
      })
    };
    if (state.category.severities.length > 1) report.severity = state.severity;
    var item = {
      report_id: report.report_id, report: report,
      photos: state.photos.map(function (p) { return { blob: p.blob, name: p.name, thumb: p.thumb, exif: p.exif, original_bytes: p.original_bytes }; }),
      summary: { category: state.category.name, grid: grid ? grid.name : '本县网格外',
                 cross_grid: !!(grid && own && grid.code !== own.code), description: description }
    };
    var keep = state.editing ? GFQueue.get(state.editing) : Promise.resolve(null);
    keep.then(function (old) {
      if (old) item.created_at = old.created_at;
      return GFQueue.put(item);
    }).then(function () {
      resetForm();
      notice(navigator.onLine ? '已保存在手机上, 正在发送' : '已保存在手机上, 联网后自动发送', true);
      location.hash = '#outbox';
      kick();
    }, function () {
      showErrors('report-errors', [{ field: 'f-photos', text: '手机存储空间不足, 未能保存: 请清理空间后重试' }]);
    });
  }

  function resetForm() {
    state.photos = []; state.category = null; state.severity = null; state.editing = null;
    $('description').value = ''; $('cat-search').value = '';
    $('edit-note').hidden = true;
    chooseCategory(null);
    renderPhotos();
  }

  function editRejected(item) {
    state.editing = item.report_id;
    state.photos = item.photos.map(function (p) { return { blob: p.blob, name: p.name, thumb: p.thumb, exif: p.exif, original_bytes: p.original_bytes }; });
    var cat = state.catalogue && state.catalogue.categories.filter(function (c) { return c.code === item.report.category_code; })[0];
    state.severity = item.report.severity || null;
    chooseCategory(cat || null);
    $('description').value = item.report.description || '';
    state.location = { lat: item.report.lat, lon: item.report.lon, accuracy: item.report.location_accuracy_m,
                       source: item.report.location_source || 'gps', at: 0 };
    var note = $('edit-note');
    note.textContent = '上次被拒: ' + (item.reason || '') + ' 修改后点“提交”重新发送。';
    note.hidden = false;
    renderPhotos();
    location.hash = '#report';
    show('report');
    renderLocation();
  }

  /* --- sending: now, on reconnect, and on the retry timer ------------------------------- */

  /* Ask the service worker to send when the network is back, even if the page is closed by
     then (Background Sync, where the browser has it; elsewhere the page sends when reopened). */
  function syncLater() {
    if (!('serviceWorker' in navigator)) return;
    navigator.serviceWorker.ready.then(function (reg) {
      if (reg.sync && reg.sync.register) return reg.sync.register('gridflow-outbox');
    }).catch(function () { /* not supported or not allowed */ });
  }

  function kick() {
    if (!navigator.onLine) { syncLater(); renderOutbox(); return; }
    GFQueue.sendAll().then(function (stop) {
      if (stop === 'signin') {
        state.me = null;
        $('signin-why').textContent = '登录已失效: 请重新登录, 手机上保存的上报会在登录后自动发送。';
        show('signin');
      }
      if (stop === 'csrf') return loadMe().then(function () { if (state.me) kick(); });
    }).then(schedule, schedule);
  }

  function schedule() {
    clearTimeout(state.timer);
    GFQueue.nextDue().then(function (ms) {
      if (ms !== null) state.timer = setTimeout(kick, Math.max(500, ms));
    });
  }

  /* --- the outbox ------------------------------------------------------------------------ */

  function badge(status, text) {
    var cls = { waiting: 'waiting', sending: 'sending', accepted: 'accepted', rejected: 'rejected' }[status] || 'warn';
    return el('span', { class: 'state ' + cls, text: text || GFQueue.STATE_ZH[status] || status });
  }

  function renderOutbox() {
    GFQueue.list().then(function (items) {
      var open = items.filter(function (i) { return i.status !== 'accepted'; }).length;
      $('outbox-count').textContent = String(open);
      $('outbox-count').hidden = !open;
      if ($('view-outbox').hidden) return;
      var list = $('outbox-list');
      list.textContent = '';
      if (!items.length) list.appendChild(el('li', { class: 'empty', text: '手机上没有待发送的上报' }));
      items.forEach(function (item) {
        var s = item.summary || {};
        var li = el('li', { 'data-report': item.report_id, 'data-status': item.status }, [
          el('div', { class: 'top' }, [el('span', { class: 'what', text: s.category || '上报' }), badge(item.status)]),
          el('div', { class: 'meta', text: when(item.created_at) + ' · ' + (s.grid || '') + (s.cross_grid ? ' (跨网格)' : '') +
            ' · ' + item.photos.length + '张照片' }),
          s.description ? el('div', { class: 'meta', text: s.description }) : null
        ]);
        if (item.status === 'accepted' && item.ticket) {
          li.appendChild(el('div', { class: 'ticket-line', text: '受理编号 ' + item.ticket }));
        }
        if (item.reason && item.status !== 'accepted') li.appendChild(el('div', { class: 'reason', text: item.reason }));
        if (item.status === 'rejected') {
          var edit = el('button', { type: 'button', class: 'small', text: '修改后重发' });
          edit.addEventListener('click', function () { editRejected(item); });
          var drop = el('button', { type: 'button', class: 'small', text: '放弃此上报' });
          drop.addEventListener('click', function () {
            if (window.confirm('放弃后这条上报将从手机上删除, 不会再发送。确定放弃?')) GFQueue.remove(item.report_id);
          });
          li.appendChild(el('div', { class: 'row' }, [edit, drop]));
        } else if (item.status === 'waiting') {
          var again = el('button', { type: 'button', class: 'small', text: '立即重发' });
          again.addEventListener('click', function () { GFQueue.retryNow(item.report_id).then(kick); });
          li.appendChild(el('div', { class: 'row' }, [again]));
        }
        list.appendChild(li);
      });
    });
  }

  /* --- my reports ------------------------------------------------------------------------ */

  function loadMine() {
    if ($('view-mine').hidden) return;
    Promise.all([api('/m/api/reports').catch(function () { return null; }), GFQueue.list()]).then(function (got) {
      var r = got[0], queued = got[1], list = $('mine-list');
      if (r && r.status === 401) { state.me = null; route(); return; }
      var rows = r && r.ok ? r.body.reports : null;
      list.textContent = '';
      if (!rows) list.appendChild(el('li', { class: 'empty', text: '离线: 联网后可查看办理进度' }));
      var known = {};
      (rows || []).forEach(function (x) { known[x.report_id] = true; });
      queued.filter(function (i) { return i.status === 'accepted' && !known[i.report_id]; }).forEach(function (i) {
        list.appendChild(el('li', { 'data-report': i.report_id }, [
          el('div', { class: 'top' }, [el('span', { class: 'what', text: (i.summary || {}).category || '上报' }),
                                      badge('accepted', '已受理')]),
          el('div', { class: 'ticket-line', text: '受理编号 ' + (i.ticket || '') }),
          el('div', { class: 'meta', text: '正在立案、派遣…' })
        ]));
      });
      if (rows && !rows.length && !list.children.length) list.appendChild(el('li', { class: 'empty', text: '还没有上报' }));
      (rows || []).forEach(function (x) {
        var cls = x.state === '不予立案' ? 'rejected' : (x.state === '已结案' ? 'accepted' : 'sending');
        var li = el('li', { 'data-report': x.report_id, 'data-case': x.case_id }, [
          el('div', { class: 'top' }, [el('span', { class: 'what', text: x.category_name || '上报' }),
                                      el('span', { class: 'state ' + cls, text: x.state })]),
          el('div', { class: 'ticket-line', text: '受理编号 ' + x.case_id }),
          el('div', { class: 'meta', text: when(x.submitted_at) + (x.grid_name ? ' · ' + x.grid_name : '') +
            (x.description ? ' · ' + x.description : '') })
        ]);
        if (x.reason) li.appendChild(el('div', { class: 'reason', text: '不予立案: ' + x.reason }));
        if (x.merged_into) li.appendChild(el('div', { class: 'meta', text: '已并入案件 ' + x.merged_into + ' 一并办理' }));
        if (x.steps && x.steps.length) {
          li.appendChild(el('ul', { class: 'steps' }, x.steps.map(function (s) {
            return el('li', { class: s.done ? 'done' : '', title: s.at ? when(s.at) : '', text: s.step + (s.at ? ' ' + when(s.at) : '') });
          })));
        }
        list.appendChild(li);
      });
    });
  }

  /* --- my tasks: verification on site ------------------------------------------------------ */

  function dueBadge(t) {
    var text = t.verify_due ? '核查期限 ' + when(t.verify_due) : '无期限';
    if (t.due === 'late') return el('span', { class: 'due late', text: '已超期 · ' + text });
    if (t.due === 'near') return el('span', { class: 'due near', text: '即将到期 · ' + text });
    return el('span', { class: 'due', text: text });
  }

  function photoRow(urls) {
    if (!urls || !urls.length) return null;
    return el('div', { class: 'photos-row' }, urls.map(function (u, i) { return el('img', { src: u, alt: '照片' + (i + 1), loading: 'lazy' }); }));
  }

  function loadTasks() {
    api('/m/api/tasks').then(function (r) {
      if (r.status === 401) { state.me = null; route(); return; }
      var list = $('task-list');
      list.textContent = '';
      if (!r.ok) { list.appendChild(el('li', { class: 'empty', text: r.body.message_zh || '暂时无法读取待办' })); return; }
      state.tasks = r.body.tasks;
      $('task-count').textContent = String(state.tasks.length);
      $('task-count').hidden = !state.tasks.length;
      if (!state.tasks.length) list.appendChild(el('li', { class: 'empty', text: '没有待核查的案件' }));
      state.tasks.forEach(function (t) {
        var go = el('button', { type: 'button', class: 'small', text: '去核查' });
        go.addEventListener('click', function () { openVerify(t); });
        list.appendChild(el('li', { 'data-task': t.task_id }, [
          el('div', { class: 'top' }, [el('span', { class: 'what', text: t.category_name || '案件' }), dueBadge(t)]),
          el('div', { class: 'ticket-line', text: t.case_id }),
          el('div', { class: 'meta', text: (t.grid_name || '') + ' · ' + t.department_name + ' ' + when(t.resolved_at) + ' 办结' }),
          t.resolution_note ? el('div', { class: 'meta', text: '办结说明: ' + t.resolution_note }) : null,
          photoRow(t.after_photos),
          el('div', { class: 'row' }, [go])
        ]));
      });
    }, function () {
      $('task-list').textContent = '';
      $('task-list').appendChild(el('li', { class: 'empty', text: '离线: 联网后可查看待核查的案件' }));
    });
  }

  function openVerify(t) {
    state.task = t;
    state.vphotos = [];
    state.verifyKey = newId('v-');
    renderVPhotos();
    $('vnote').value = '';
    Array.prototype.forEach.call(document.querySelectorAll('input[name=result]'), function (i) { i.checked = false; });
    showErrors('verify-errors', []);
    var box = $('verify-case');
    box.textContent = '';
    box.appendChild(el('h2', { text: t.category_name || '案件核查' }));
    box.appendChild(el('div', { class: 'ticket-line', text: t.case_id }));
    box.appendChild(el('div', { class: 'meta', text: (t.address || t.grid_name || '') }));
    if (t.description) box.appendChild(el('div', { class: 'meta', text: '问题: ' + t.description }));
    box.appendChild(el('div', { class: 'meta', text: t.department_name + ' 办结' + (t.resolution_note ? ': ' + t.resolution_note : '') }));
    box.appendChild(dueBadge(t));
    box.appendChild(el('div', { class: 'label', text: '整改后照片' }));
    box.appendChild(photoRow(t.after_photos) || el('div', { class: 'meta', text: '(无)' }));
    show('verify');
  }

  function submitVerify(ev) {
    ev.preventDefault();
    state.preparing.then(sendVerify);
  }

  function sendVerify() {
    var result = document.querySelector('input[name=result]:checked');
    var note = $('vnote').value.trim(), errors = [];
    if (!result) errors.push({ field: 'f-result', text: '请选择核查结果' });
    if (result && result.value === 'fail' && !note) errors.push({ field: 'f-reason', text: '核查不通过, 请说明原因' });
    showErrors('verify-errors', errors);
    if (errors.length) return;
    var passed = result.value === 'pass', form = new FormData();
    form.append('verification', JSON.stringify(passed ? { passed: true, note: note } : { passed: false, reason: note }));
    state.vphotos.forEach(function (p) { form.append('photos', p.blob, p.name); });
    var button = $('verify-submit');
    button.disabled = true;
    GFDB.get('kv', 'csrf').then(function (csrf) {
      return api('/m/api/tasks/' + encodeURIComponent(state.task.task_id) + '/verification', {
        method: 'POST', body: form, headers: { 'X-CSRF-Token': csrf || '', 'Idempotency-Key': state.verifyKey } });
    }).then(function (r) {
      if (!r.ok) throw r;
      return api(r.body.status_url + '?wait=8');
    }).then(function (r) {
      if (r.ok && r.body.status === 'refused') throw { body: { message_zh: r.body.reason_zh } };
      notice(passed ? '核查通过, 案件将结案' : '核查不通过, 已退回部门返工', true);
      location.hash = '#tasks';
      show('tasks');
    }).catch(function (r) {
      var body = (r && r.body) || {};
      var text = body.message_zh || (r && r.status ? '提交未成功(' + r.status + ')' : '网络不通, 未能提交: 请联网后再试');
      showErrors('verify-errors', [{ field: 'f-result', text: text }]);
    }).then(function () { button.disabled = false; });
  }

  /* --- start --------------------------------------------------------------------------- */

  function online() {
    $('offline').hidden = navigator.onLine;
  }

  function mark(name) { if (window.performance && performance.mark) performance.mark(name); }

  function start() {
    mark('gf-start');
    if (!window.indexedDB || !window.fetch || !window.Promise) {
      $('view-loading').textContent = '此浏览器版本过旧, 无法使用掌上巡检; 请升级浏览器或微信。';
      return;
    }
    if ('serviceWorker' in navigator) {
      navigator.serviceWorker.register('/m/sw.js', { scope: '/m/' }).catch(function () { /* online only */ });
    }
    takeFiles($('camera'), 'photos', renderPhotos);
    takeFiles($('album'), 'photos', renderPhotos);
    takeFiles($('vcamera'), 'vphotos', renderVPhotos);
    takeFiles($('valbum'), 'vphotos', renderVPhotos);
    $('cat-search').addEventListener('input', renderCategories);
    $('report-form').addEventListener('submit', submitReport);
    $('verify-form').addEventListener('submit', submitVerify);
    $('verify-cancel').addEventListener('click', function () { show('tasks'); });
    $('relocate').addEventListener('click', function () {
      stopLocating(); state.location = null; state.locError = null; renderLocation(); startLocating();
    });
    $('mine-refresh').addEventListener('click', loadMine);
    window.addEventListener('hashchange', route);
    document.addEventListener('click', function (ev) {  /* a link to the view's own hash: show it */
      var a = ev.target.closest && ev.target.closest('a[href^="#"]');
      if (a && a.getAttribute('href') === location.hash) { ev.preventDefault(); route(); }
    });
    window.addEventListener('online', function () { online(); kick(); });
    window.addEventListener('offline', online);
    document.addEventListener('visibilitychange', function () { if (!document.hidden) kick(); });
    GFQueue.onChange(renderOutbox);
    if (window.BroadcastChannel) new BroadcastChannel('gridflow-outbox').onmessage = renderOutbox;
    online();
    /* A second visit opens from what the phone keeps (who, the catalogue) and refreshes both
       from the network afterwards; a first visit asks for both at once. */
    var me = kept('me'), catalogue = kept('catalogue');
    mark('gf-kept');
    if (me && catalogue) {
      state.me = me; state.catalogue = catalogue;
      boot();
      loadMe().then(function () {
          renderWho();
          if (!state.me) { route(); return; }
        if (!state.catalogue || state.catalogue.version !== state.me.catalogue) {
          return fetchCatalogue().then(renderCategories);
        }
      }).then(function () { if (state.me) kick(); });
      return;
    }
    Promise.all([loadMe(), fetchCatalogue()]).then(function () {
      boot();
      if (state.me) kick();
    });
  }

  function boot() {
    renderWho();
    chooseCategory(null);
    renderPhotos();
    route();
    renderOutbox();
    document.body.setAttribute('data-ready', '1');
    mark('gf-ready');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
