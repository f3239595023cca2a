/* 码上说: the resident's form, enhanced. Without this script the form posts as it is; with
 * it, photos are scaled down first, errors appear above the form and beside the field, and
 * nothing typed is lost when the network fails. */
(function () {
  'use strict';
  var form = document.getElementById('resident-form');
  if (!form || !window.fetch || !window.FormData || !window.Promise) return;
  document.documentElement.classList.add('js');
  var input = document.getElementById('photos');
  var thumbs = document.getElementById('photo-thumbs');
  var summary = document.getElementById('error-summary');
  var button = document.getElementById('submit');
  var MAX = 3, prepared = [];

  function fieldBox(name) {
    var id = name && name.indexOf('photos') === 0 ? 'f-photos' : 'f-' + name;
    return document.getElementById(id);
  }

  function clearErrors() {
    summary.hidden = true;
    Array.prototype.forEach.call(form.querySelectorAll('.field-error'), function (e) { e.remove(); });
    Array.prototype.forEach.call(form.querySelectorAll('.has-error'), function (e) { e.classList.remove('has-error'); });
  }

  function showError(field, text) {
    summary.querySelector('p').textContent = text;
    summary.hidden = false;
    var box = fieldBox(field);
    if (box) {
      box.classList.add('has-error');
      var p = document.createElement('p');
      p.className = 'field-error';
      p.textContent = text;
      box.insertBefore(p, box.children[1] || null);
    }
    summary.focus();
    window.scrollTo(0, 0);
  }

  function renderThumbs() {
    thumbs.textContent = '';
    prepared.forEach(function (p, i) {
      var fig = document.createElement('figure');
      var img = document.createElement('img');
      img.alt = '照片' + (i + 1);
      if (p.thumb) img.src = p.thumb;
      var del = document.createElement('button');
      del.type = 'button'; del.textContent = '×'; del.setAttribute('aria-label', '删除照片' + (i + 1));
      del.addEventListener('click', function () { prepared.splice(i, 1); renderThumbs(); });
      fig.appendChild(img); fig.appendChild(del);
      if (!p.thumb) {
        var cap = document.createElement('figcaption');
        cap.textContent = '无法预览';
        fig.appendChild(cap);
      }
      thumbs.appendChild(fig);
    });
  }

  input.addEventListener('change', function () {
    var files = Array.prototype.slice.call(input.files || []);
    input.value = '';
    var room = MAX - prepared.length;
    if (files.length > room) showError('photos', '最多上传' + MAX + '张照片');
    Promise.all(files.slice(0, Math.max(0, room)).map(window.GFPhoto.prepare)).then(function (list) {
      prepared = prepared.concat(list);
      renderThumbs();
    });
  });

  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    clearErrors();
    var data = new FormData();
    ['report_id', 'service_code', 'description', 'phone', 'name'].forEach(function (n) {
      data.append(n, form.elements[n].value);
    });
    if (!form.elements.service_code.value) return showError('service_code', '请选择问题类型');
    if (!form.elements.description.value.trim()) return showError('description', '请简单描述问题');
    if (!form.elements.phone.value.trim()) return showError('phone', '请留下联系电话, 以便回访');
    prepared.forEach(function (p) { data.append('photos', p.blob, p.name); });
    button.disabled = true;
    button.textContent = '正在提交…';
    fetch(form.getAttribute('action'), { method: 'POST', body: data, headers: { Accept: 'application/json' },
                                         credentials: 'same-origin' })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (r.ok && body.ticket_url) { window.location.assign(body.ticket_url + '?new=1'); return; }
          showError(body.field || '', body.message_zh || '提交未成功, 请稍后重试');
        });
      }, function () {
        showError('', '网络不通, 提交未成功。填写的内容仍在, 请稍后再点提交。');
      })
      .then(function () { button.disabled = false; button.textContent = '提交'; });
  });
})();
