/* Photos on the phone: read the capture time and GPS from the original's EXIF, then scale it
 * down (longest edge MAX_EDGE px, JPEG) before it is queued or uploaded: patrols happen on weak
 * rural networks. A file the phone cannot decode is passed on unchanged: the server decides
 * (and refuses what is not a photo, with the reason in Chinese). Plain ES2017, no modules. */
(function (root) {
  'use strict';
  var MAX_EDGE = 2560;
  var QUALITY = 0.85;
  var THUMB_EDGE = 176;  /* previews as data: URLs (the CSP allows data: images, not blob:) */

  function u16(v, o, le) { return v.getUint16(o, le); }
  function u32(v, o, le) { return v.getUint32(o, le); }

  function ifdEntries(v, tiff, off, le) {
    var out = {};
    if (off + 2 > v.byteLength) return out;
    var n = u16(v, off, le);
    for (var i = 0; i < n; i++) {
      var e = off + 2 + i * 12;
      if (e + 12 > v.byteLength) break;
      out[u16(v, e, le)] = { type: u16(v, e + 2, le), count: u32(v, e + 4, le), at: e + 8 };
    }
    return out;
  }

  function ascii(v, tiff, ent, le) {
    if (!ent) return null;
    var off = ent.count > 4 ? tiff + u32(v, ent.at, le) : ent.at;
    var s = '';
    for (var i = 0; i < ent.count && off + i < v.byteLength; i++) {
      var c = v.getUint8(off + i);
      if (c === 0) break;
      s += String.fromCharCode(c);
    }
    return s;
  }

  function rationals(v, tiff, ent, le) {
    if (!ent || ent.type !== 5) return null;
    var off = tiff + u32(v, ent.at, le), out = [];
    for (var i = 0; i < ent.count; i++) {
      if (off + 8 * i + 8 > v.byteLength) return null;
      var d = u32(v, off + 8 * i + 4, le);
      out.push(d ? u32(v, off + 8 * i, le) / d : 0);
    }
    return out;
  }

  function degrees(r, ref) {
    if (!r || r.length < 3) return null;
    var d = r[0] + r[1] / 60 + r[2] / 3600;
    return (ref === 'S' || ref === 'W') ? -d : d;
  }

  function pad(n) { return (n < 10 ? '0' : '') + n; }

  /* "2026:11:23 09:30:00" (+ "+08:00" when the camera wrote its offset) -> ISO 8601 with offset. */
  function exifTime(text, offset) {
    var m = /^(\d{4}):(\d\d):(\d\d) (\d\d):(\d\d):(\d\d)/.exec(text || '');
    if (!m) return null;
    var base = m[1] + '-' + m[2] + '-' + m[3] + 'T' + m[4] + ':' + m[5] + ':' + m[6];
    if (offset && /^[+-]\d\d:\d\d$/.test(offset)) return base + offset;
    var local = new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
    if (isNaN(local.getTime())) return null;
    var tz = -local.getTimezoneOffset();
    return base + (tz >= 0 ? '+' : '-') + pad(Math.floor(Math.abs(tz) / 60)) + ':' + pad(Math.abs(tz) % 60);
  }

  /* {taken_at, lat, lon} from a JPEG's EXIF (any of them null), or null without EXIF. */
  function readExif(buffer) {
    var v = new DataView(buffer);
    if (v.byteLength < 4 || u16(v, 0) !== 0xFFD8) return null;
    var p = 2;
    while (p + 4 <= v.byteLength) {
      var marker = u16(v, p), len = u16(v, p + 2);
      if (marker === 0xFFE1 && p + 10 <= v.byteLength && u32(v, p + 4) === 0x45786966) {
        var tiff = p + 10, le = u16(v, tiff) === 0x4949;
        var ifd0 = ifdEntries(v, tiff, tiff + u32(v, tiff + 4, le), le);
        var out = { taken_at: null, lat: null, lon: null };
        if (ifd0[0x8769]) {
          var ex = ifdEntries(v, tiff, tiff + u32(v, ifd0[0x8769].at, le), le);
          out.taken_at = exifTime(ascii(v, tiff, ex[0x9003], le), ascii(v, tiff, ex[0x9011], le));
        }
        if (!out.taken_at) out.taken_at = exifTime(ascii(v, tiff, ifd0[0x0132], le), null);
        if (ifd0[0x8825]) {
          var g = ifdEntries(v, tiff, tiff + u32(v, ifd0[0x8825].at, le), le);
          var lat = degrees(rationals(v, tiff, g[2], le), ascii(v, tiff, g[1], le));
          var lon = degrees(rationals(v, tiff, g[4], le), ascii(v, tiff, g[3], le));
          if (lat !== null && lon !== null && isFinite(lat) && isFinite(lon) && (lat || lon)) {
            out.lat = Math.round(lat * 1e6) / 1e6;
            out.lon = Math.round(lon * 1e6) / 1e6;
          }
        }
        return out;
      }
      if ((marker & 0xFF00) !== 0xFF00 || marker === 0xFFDA) break;
      p += 2 + len;
    }
    return null;
  }

  function decode(file) {
    if (root.createImageBitmap) {
      return root.createImageBitmap(file, { imageOrientation: 'from-image' }).catch(function () {
        return decodeWithImg(file);
      });
    }
    return decodeWithImg(file);
  }

  function decodeWithImg(file) {
    return new Promise(function (resolve, reject) {
      if (!root.document) { reject(new Error('no decoder')); return; }
      var url = URL.createObjectURL(file), img = new Image();
      img.onload = function () { URL.revokeObjectURL(url); resolve(img); };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error('undecodable')); };
      img.src = url;
    });
  }

  function toBlob(canvas) {
    if (canvas.convertToBlob) return canvas.convertToBlob({ type: 'image/jpeg', quality: QUALITY });
    return new Promise(function (resolve, reject) {
      canvas.toBlob(function (b) { b ? resolve(b) : reject(new Error('encode failed')); }, 'image/jpeg', QUALITY);
    });
  }

  function thumbnail(img, w, h) {
    if (!root.document) return null;
    var s = Math.min(1, THUMB_EDGE / Math.max(w, h));
    var c = document.createElement('canvas');
    c.width = Math.max(1, Math.round(w * s)); c.height = Math.max(1, Math.round(h * s));
    c.getContext('2d').drawImage(img, 0, 0, c.width, c.height);
    return c.toDataURL('image/jpeg', 0.7);
  }

  /* Promise of {blob, name, width, height, exif, original_bytes, scaled}. */
  function prepare(file) {
    var head = file.slice(0, 256 * 1024);
    var readHead = head.arrayBuffer ? head.arrayBuffer() : new Response(head).arrayBuffer();
    return readHead.then(function (buf) {
      var exif = null;
      try { exif = readExif(buf); } catch (e) { exif = null; }
      return decode(file).then(function (img) {
        var w = img.width, h = img.height, scale = Math.min(1, MAX_EDGE / Math.max(w, h));
        var cw = Math.max(1, Math.round(w * scale)), ch = Math.max(1, Math.round(h * scale));
        var canvas = root.OffscreenCanvas ? new OffscreenCanvas(cw, ch) : document.createElement('canvas');
        canvas.width = cw; canvas.height = ch;
        canvas.getContext('2d').drawImage(img, 0, 0, cw, ch);
        var thumb = thumbnail(img, w, h);
        if (img.close) img.close();
        return toBlob(canvas).then(function (blob) {
          return { blob: blob, name: (file.name || 'photo').replace(/\.[^.]*$/, '') + '.jpg',
                   width: cw, height: ch, exif: exif, original_bytes: file.size, scaled: true,
                   thumb: thumb };
        });
      }, function () {
        /* Not decodable here: sent as it is, the server's inspection has the last word. */
        return { blob: file, name: file.name || 'photo', width: null, height: null, exif: exif,
                 original_bytes: file.size, scaled: false, thumb: null };
      });
    });
  }

  root.GFPhoto = { prepare: prepare, readExif: readExif, MAX_EDGE: MAX_EDGE };
})(typeof self !== 'undefined' ? self : this);
