/* IndexedDB for the worker app and its service worker: the outbox of reports (by report id)
 * and a key-value store (who is signed in, the CSRF token, the catalogue). Plain ES2017. */
(function (root) {
  'use strict';
  var NAME = 'gridflow-m', VERSION = 1, opened = null;

  function open() {
    return new Promise(function (resolve, reject) {
      var req = root.indexedDB.open(NAME, VERSION);
      req.onupgradeneeded = function () {
        var db = req.result;
        if (!db.objectStoreNames.contains('outbox')) db.createObjectStore('outbox', { keyPath: 'report_id' });
        if (!db.objectStoreNames.contains('kv')) db.createObjectStore('kv');
      };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function db() { return opened || (opened = open()); }

  function run(store, mode, fn) {
    return db().then(function (d) {
      return new Promise(function (resolve, reject) {
        var tx = d.transaction(store, mode), req = fn(tx.objectStore(store));
        tx.oncomplete = function () { resolve(req ? req.result : undefined); };
        tx.onerror = function () { reject(tx.error); };
        tx.onabort = function () { reject(tx.error || new Error('aborted')); };
      });
    });
  }

  root.GFDB = {
    get: function (store, key) { return run(store, 'readonly', function (s) { return s.get(key); }); },
    all: function (store) { return run(store, 'readonly', function (s) { return s.getAll(); }); },
    put: function (store, value, key) {
      return run(store, 'readwrite', function (s) { return key === undefined ? s.put(value) : s.put(value, key); });
    },
    del: function (store, key) { return run(store, 'readwrite', function (s) { return s.delete(key); }); }
  };
})(typeof self !== 'undefined' ? self : this);
