/* 掌上巡检's service worker (scope /m/). The server puts GF_VERSION, GF_SHELL, GF_IDB and
 * GF_QUEUE above this line. The app shell and its assets are cached at install and served
 * from the cache first (a second visit opens offline, in well under a second); the catalogue
 * and who-am-I are fetched from the network first, the cache when offline; everything else
 * (reports, APIs) goes to the network untouched. A background sync sends the outbox. */
'use strict';
importScripts(GF_IDB, GF_QUEUE);
var CACHE = 'gridflow-m-' + GF_VERSION;
var DATA = 'gridflow-m-data';

self.addEventListener('install', function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) {
    return cache.addAll(GF_SHELL);
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener('activate', function (event) {
  event.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) {
      return k.indexOf('gridflow-m-') === 0 && k !== CACHE && k !== DATA;
    }).map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

function fromCacheFirst(request, key) {
  return caches.open(CACHE).then(function (cache) {
    return cache.match(key || request).then(function (hit) {
      return hit || fetch(request).then(function (response) {
        if (response.ok && request.method === 'GET') cache.put(key || request, response.clone());
        return response;
      });
    });
  });
}

function fromNetworkFirst(request) {
  return caches.open(DATA).then(function (cache) {
    return fetch(request).then(function (response) {
      if (response.ok) cache.put(request, response.clone());
      return response;
    }, function () {
      return cache.match(request).then(function (hit) {
        return hit || new Response(JSON.stringify({ code: 'offline', message_zh: '当前离线' }),
          { status: 503, headers: { 'Content-Type': 'application/json' } });
      });
    });
  });
}

self.addEventListener('fetch', function (event) {
  var request = event.request;
  if (request.method !== 'GET') return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === 'navigate' && (url.pathname === '/m/' || url.pathname === '/m')) {
    event.respondWith(fromCacheFirst(request, '/m/'));
  } else if (url.pathname.indexOf('/m/static/') === 0 || url.pathname === '/m/manifest.webmanifest') {
    event.respondWith(fromCacheFirst(request));
  } else if (url.pathname === '/m/api/catalogue' || url.pathname === '/m/api/me') {
    event.respondWith(fromNetworkFirst(request));
  }
});

self.addEventListener('sync', function (event) {
  if (event.tag === 'gridflow-outbox') event.waitUntil(self.GFQueue.sendAll());
});

self.addEventListener('message', function (event) {
  if (event.data === 'send') event.waitUntil(self.GFQueue.sendAll());
});
