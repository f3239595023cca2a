/* The outbox: reports saved on the phone the moment 提交 is tapped, sent whenever the network
 * allows, from the page or from the service worker (one sender at a time: a Web Lock).
 * A report keeps the id made on the phone, so a retry after a lost answer is the same report
 * (the API answers it with the first answer). States: waiting 待发送, sending 发送中,
 * accepted 已受理 (with the ticket), rejected 被拒 (with the reason in Chinese). Failures of
 * the network or the server are retried with exponential backoff; a refusal of the report
 * itself waits for the worker to change it. Plain ES2017; needs GFDB (idb.js). */
(function (root) {
  'use strict';
  var FIRST_S = 2, MAX_S = 300;
  var STATE_ZH = { waiting: '待发送', sending: '发送中', accepted: '已受理', rejected: '被拒' };
  var listeners = [];

  function now() { return Date.now(); }

  function backoffMs(attempt) {
    var s = Math.min(MAX_S, FIRST_S * Math.pow(2, attempt));
    return Math.round(s * 1000 * (0.8 + Math.random() * 0.4));
  }

  function notify() {
    listeners.forEach(function (f) { try { f(); } catch (e) { /* a view's problem */ } });
    if (root.BroadcastChannel) {
      try { new BroadcastChannel('gridflow-outbox').postMessage('changed'); } catch (e) { /* none */ }
    }
  }

  function save(item) {
    item.updated_at = now();
    return root.GFDB.put('outbox', item).then(function () { notify(); return item; });
  }

  function list() {
    return root.GFDB.all('outbox').then(function (items) {
      return items.sort(function (a, b) { return b.created_at - a.created_at; });
    });
  }

  /* Save a report to send (a new one, or a refused one changed): waiting, tried at once. */
  function put(item) {
    item.status = 'waiting';
    item.attempts = 0;
    item.next_at = 0;
    item.reason = null;
    item.field = null;
    if (!item.created_at) item.created_at = now();
    return save(item);
  }

  function withLock(fn) {
    if (root.navigator && root.navigator.locks && root.navigator.locks.request) {
      return root.navigator.locks.request('gridflow-outbox', fn);
    }
    return fn();
  }

  function upload(item, csrf) {
    var form = new FormData();
    form.append('report', JSON.stringify(item.report));
    item.photos.forEach(function (p) { form.append('photos', p.blob, p.name || 'photo.jpg'); });
    return root.fetch('/api/v1/reports', {
      method: 'POST', body: form, credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf || '', Accept: 'application/json' }
    });
  }

  function later(item, reason) {
    item.attempts = (item.attempts || 0) + 1;
    item.status = 'waiting';
    item.next_at = now() + backoffMs(item.attempts - 1);
    item.reason = reason;
    return save(item).then(function () { return null; });
  }

  /* What an answer means for the item; returns a reason to stop sending ('signin', 'csrf'). */
  function settle(item, status, body) {
    if (status === 200 || status === 201 || status === 202) {
      item.status = 'accepted';
      item.ticket = body.case_id || item.ticket || null;
      item.accepted_at = now();
      item.reason = null; item.field = null;
      return save(item).then(function () { return null; });
    }
    if (status === 401) {
      item.status = 'waiting';
      item.reason = '登录已失效: 请重新登录, 登录后自动发送';
      return save(item).then(function () { return 'signin'; });
    }
    if (status === 403 && body.code === 'csrf') {
      item.status = 'waiting';
      return save(item).then(function () { return 'csrf'; });
    }
    if ((status === 409 && body.code === 'in_progress') || status === 408 || status === 429 || status >= 500) {
      return later(item, body.message_zh || '服务器繁忙, 稍后自动重发');
    }
    item.status = 'rejected';
    item.reason = body.message_zh || ('上报被拒绝(' + status + ')');
    var photo = /^photos\[(\d+)\]$/.exec(body.field || '');
    if (photo) item.reason = '第' + (+photo[1] + 1) + '张照片: ' + item.reason;
    item.field = body.field || null;
    return save(item).then(function () { return null; });
  }

  function sendOne(item, csrf) {
    item.status = 'sending';
    return save(item).then(function () { return upload(item, csrf); }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        return settle(item, r.status, body || {});
      });
    }, function () {
      return later(item, '网络不通, 稍后自动重发');
    });
  }

  /* Send every report that is due, oldest first. Resolves to null, or why it stopped. */
  function sendAll() {
    return withLock(function () {
      return Promise.all([list(), root.GFDB.get('kv', 'csrf')]).then(function (got) {
        var due = got[0].filter(function (i) {
          return (i.status === 'waiting' || i.status === 'sending') && (i.next_at || 0) <= now();
        }).reverse();
        return due.reduce(function (p, item) {
          return p.then(function (stop) { return stop || sendOne(item, got[1]); });
        }, Promise.resolve(null));
      });
    });
  }

  /* When the next retry is due (ms from now), or null when nothing waits. */
  function nextDue() {
    return list().then(function (items) {
      var times = items.filter(function (i) { return i.status === 'waiting'; })
        .map(function (i) { return Math.max(0, (i.next_at || 0) - now()); });
      return times.length ? Math.min.apply(null, times) : null;
    });
  }

  /* Try a waiting report now (the worker tapped 立即重发). */
  function retryNow(reportId) {
    return root.GFDB.get('outbox', reportId).then(function (item) {
      if (!item || item.status === 'accepted') return null;
      item.next_at = 0;
      if (item.status !== 'rejected') item.status = 'waiting';
      return save(item);
    });
  }

  root.GFQueue = {
    put: put, list: list, sendAll: sendAll, nextDue: nextDue, retryNow: retryNow,
    STATE_ZH: STATE_ZH, onChange: function (f) { listeners.push(f); },
    get: function (id) { return root.GFDB.get('outbox', id); },
    remove: function (id) { return root.GFDB.del('outbox', id).then(notify); }
  };
})(typeof self !== 'undefined' ? self : this);
