// imagegate upload page. No framework, no build step, no inline code (the page is served with a
// strict Content-Security-Policy). All files go up in ONE `POST /v1/images/batch`, sent with
// XMLHttpRequest: `xhr.upload.onprogress` drives each file's upload bar, and the answer, a
// server-sent-event stream, is parsed incrementally from `xhr.responseText` as it arrives.
(function () {
  'use strict';

  var OPERATIONS = {
    compress: {
      fields: ['quality', 'format'],
      hint: 'Re-encode each image at the chosen quality.',
      formatDefault: 'Default (WebP)'
    },
    resize: {
      fields: ['width', 'height', 'keep_aspect_ratio', 'format', 'quality'],
      hint: 'Scale each image to a box, or to an exact size.',
      formatDefault: 'Default (same as the input)'
    },
    watermark: {
      fields: ['text', 'position', 'opacity', 'font_size', 'format', 'quality'],
      hint: 'Draw a text watermark on each image.',
      formatDefault: 'Default (same as the input)'
    }
  };

  // 2×2 AVIF and 1×1 WebP: whether this browser can show them decides the `Accept` header
  // sent with the batch, which is what `format=auto` chooses from.
  var AVIF_PROBE = 'data:image/avif;base64,AAAAIGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZk1BMUIAAADybWV0YQAAAAAAAAAoaGRscgAAAAAAAAAAcGljdAAAAAAAAAAAAAAAAGxpYmF2aWYAAAAADnBpdG0AAAAAAAEAAAAeaWxvYwAAAABEAAABAAEAAAABAAABGgAAAB0AAAAoaWluZgAAAAAAAQAAABppbmZlAgAAAAABAABhdjAxQ29sb3IAAAAAamlwcnAAAABLaXBjbwAAABRpc3BlAAAAAAAAAAIAAAACAAAAEHBpeGkAAAAAAwgICAAAAAxhdjFDgQ0MAAAAABNjb2xybmNseAACAAIAAYAAAAAXaXBtYQAAAAAAAAABAAEEAQKDBAAAACVtZGF0EgAKCBgANogQEAwgMg8f8D///8WfhwB8+ErK42A=';
  var WEBP_PROBE = 'data:image/webp;base64,UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA';

  var ARCHIVE_RE = /\.(zip|tar|tgz|tar\.gz|tar\.zst|tzst)$/i;
  var ARCHIVE_TYPES = ['application/zip', 'application/x-zip-compressed', 'application/x-tar',
    'application/gzip', 'application/x-gzip', 'application/zstd'];

  var $ = function (id) { return document.getElementById(id); };
  var els = {};
  var supports = { avif: false, webp: false };
  var selected = []; // the File objects to upload, in order
  var run = null;    // the batch in progress (or last finished)
  var blobUrls = []; // object URLs to revoke when the results are cleared

  // ---------------------------------------------------------------- small helpers

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function formatBytes(n) {
    if (typeof n !== 'number' || !isFinite(n)) return '?';
    if (n < 1024) return n + ' B';
    var units = ['KiB', 'MiB', 'GiB'];
    var v = n;
    var u = -1;
    do { v /= 1024; u++; } while (v >= 1024 && u < units.length - 1);
    return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[u];
  }

  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  function isArchive(file) {
    return ARCHIVE_RE.test(file.name) || ARCHIVE_TYPES.indexOf(file.type) !== -1;
  }

  function setState(state) { document.body.setAttribute('data-state', state); }

  function announce(text) { els.status.textContent = text; }

  function currentOperation() {
    var op = els.operation.value;
    return OPERATIONS[op] ? op : 'compress';
  }

  function apiKey() { return els.apiKey.value.trim(); }

  // ---------------------------------------------------------------- SSE parsing

  // An incremental parser of the text/event-stream format: feed it text as it arrives; it calls
  // onEvent(name, data) per complete event. Comment lines (`:` keep-alives) are skipped; a line
  // may end with CRLF, LF or CR, and may be split across chunks.
  function createSseParser(onEvent) {
    var buffer = '';
    var eventName = '';
    var data = [];

    function line(text) {
      if (text === '') {
        if (data.length) onEvent(eventName || 'message', data.join('\n'));
        eventName = '';
        data = [];
        return;
      }
      if (text.charAt(0) === ':') return;
      var colon = text.indexOf(':');
      var field = colon === -1 ? text : text.slice(0, colon);
      var value = colon === -1 ? '' : text.slice(colon + 1);
      if (value.charAt(0) === ' ') value = value.slice(1);
      if (field === 'event') eventName = value;
      else if (field === 'data') data.push(value);
      // `id` and `retry` mean nothing to a POST stream: ignored.
    }

    return {
      push: function (chunk) {
        buffer += chunk;
        var start = 0;
        for (var i = 0; i < buffer.length; i++) {
          var c = buffer.charAt(i);
          if (c !== '\n' && c !== '\r') continue;
          if (c === '\r' && i + 1 === buffer.length) break; // a CRLF may be split: wait
          line(buffer.slice(start, i));
          if (c === '\r' && buffer.charAt(i + 1) === '\n') i++;
          start = i + 1;
        }
        buffer = buffer.slice(start);
      },
      end: function () {
        // An event not ended by a blank line is incomplete and dropped (as EventSource does).
        if (buffer.charAt(buffer.length - 1) === '\r') line(buffer.slice(0, -1));
        buffer = '';
      }
    };
  }

  // ---------------------------------------------------------------- the operation form

  function applyOperation() {
    var op = currentOperation();
    var spec = OPERATIONS[op];
    var groups = document.querySelectorAll('[data-ops]');
    for (var i = 0; i < groups.length; i++) {
      var group = groups[i];
      var on = group.getAttribute('data-ops').split(/\s+/).indexOf(op) !== -1;
      group.hidden = !on;
      var controls = group.querySelectorAll('input, select, textarea');
      for (var j = 0; j < controls.length; j++) controls[j].disabled = !on;
    }
    els.operationHint.textContent = spec.hint;
    els.format.options[0].textContent = spec.formatDefault;
    els.text.required = op === 'watermark';
  }

  // The fields of the chosen operation that have a value, as [name, value] pairs.
  function operationFields() {
    var op = currentOperation();
    var out = [['operation', op]];
    OPERATIONS[op].fields.forEach(function (name) {
      var control = $(name);
      if (!control) return;
      if (control.type === 'checkbox') {
        out.push([name, control.checked ? 'true' : 'false']);
        return;
      }
      var value = name === 'text' ? control.value : control.value.trim();
      if (value.trim() !== '') out.push([name, value]);
    });
    return out;
  }

  // Native constraint checks plus the rules the browser cannot express; returns whether valid.
  function validate() {
    var op = currentOperation();
    els.width.setCustomValidity('');
    els.text.setCustomValidity('');
    if (op === 'resize') {
      var w = els.width.value.trim();
      var h = els.height.value.trim();
      if (!w && !h) {
        els.width.setCustomValidity('Give a width, a height, or both.');
      } else if (!els.keep.checked && (!w || !h)) {
        els.width.setCustomValidity('Without keeping the aspect ratio, give both width and height.');
      }
    }
    if (op === 'watermark' && els.text.value.trim() === '') {
      els.text.setCustomValidity('Type the watermark text.');
    }
    var fields = OPERATIONS[op].fields;
    for (var i = 0; i < fields.length; i++) {
      var control = $(fields[i]);
      if (control && !control.checkValidity()) {
        control.reportValidity();
        return false;
      }
    }
    return true;
  }

  // ---------------------------------------------------------------- selection and rows

  function setSelection(files) {
    if (run && run.active) return;
    var skipped = [];
    selected = [];
    for (var i = 0; i < files.length; i++) {
      // An empty part fails the whole request (400): leave such files out.
      if (files[i].size === 0) skipped.push(files[i].name);
      else selected.push(files[i]);
    }
    clearResults();
    renderSelection();
    clearError();
    if (skipped.length) {
      announce('Left out ' + plural(skipped.length, 'empty file', 'empty files') + ': ' + skipped.join(', ') + '.');
    } else if (selected.length) {
      announce(plural(selected.length, 'file', 'files') + ' selected.');
    }
  }

  function totalSize(files) {
    return files.reduce(function (sum, f) { return sum + f.size; }, 0);
  }

  function renderSelection() {
    els.results.textContent = '';
    if (!selected.length) {
      els.selection.textContent = 'No images selected.';
      els.clear.hidden = true;
      els.empty.hidden = false;
      return;
    }
    els.selection.textContent = plural(selected.length, 'file', 'files') + ' selected, ' +
      formatBytes(totalSize(selected)) + '.';
    els.clear.hidden = false;
    els.empty.hidden = true;
    var plan = indexPlan(selected);
    selected.forEach(function (file, i) {
      var row = makeRow({ index: plan[i], name: file.name, size: file.size, file: i, archive: isArchive(file) });
      row.status.textContent = isArchive(file) ? 'Archive: the server unpacks it; each image inside becomes one item.' : 'Ready to upload.';
      var remove = el('button', 'button button-quiet button-small remove', 'Remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', 'Remove ' + file.name);
      remove.addEventListener('click', function () {
        var rest = selected.slice();
        rest.splice(i, 1);
        setSelection(rest);
        (els.results.querySelector('.remove') || els.dropzone).focus();
      });
      row.actions.appendChild(remove);
      els.results.appendChild(row.li);
    });
  }

  // The batch index of each file: known for files before the first archive; an archive (and
  // anything after it) turns into as many items as it holds, which only the server knows.
  function indexPlan(files) {
    var plan = [];
    var known = true;
    for (var i = 0; i < files.length; i++) {
      if (isArchive(files[i])) known = false;
      plan.push(known ? i : null);
    }
    return plan;
  }

  function makeRow(opts) {
    var li = el('li', 'result');
    if (opts.index !== null && opts.index !== undefined) li.setAttribute('data-index', String(opts.index));
    if (opts.file !== undefined) li.setAttribute('data-file', String(opts.file));
    if (opts.archive) li.classList.add('archive');

    var preview = el('div', 'result-preview');
    preview.appendChild(el('span', 'result-placeholder', opts.archive ? 'ZIP' : 'IMG'));
    preview.firstChild.setAttribute('aria-hidden', 'true');

    var body = el('div', 'result-body');
    var head = el('div', 'result-head');
    var nameEl = el('span', 'result-name', opts.name);
    head.appendChild(nameEl);
    if (typeof opts.size === 'number') head.appendChild(el('span', 'result-size', formatBytes(opts.size)));
    body.appendChild(head);

    var progress = null;
    if (typeof opts.size === 'number') {
      progress = el('progress', 'result-progress');
      progress.max = Math.max(1, opts.size);
      progress.value = 0;
      progress.setAttribute('aria-label', 'Upload of ' + opts.name);
      body.appendChild(progress);
    }

    var status = el('p', 'result-status');
    body.appendChild(status);
    var stats = el('dl', 'result-stats');
    stats.hidden = true;
    body.appendChild(stats);
    var actions = el('div', 'result-actions');
    body.appendChild(actions);

    li.appendChild(preview);
    li.appendChild(body);
    return { li: li, preview: preview, progress: progress, status: status, stats: stats, actions: actions,
      nameEl: nameEl, name: opts.name, size: opts.size, archive: !!opts.archive, finished: false };
  }

  function clearResults() {
    blobUrls.forEach(function (u) { URL.revokeObjectURL(u); });
    blobUrls = [];
    els.results.textContent = '';
    els.summary.textContent = '';
    els.summary.setAttribute('data-state', 'idle');
  }

  // ---------------------------------------------------------------- errors

  function clearError() {
    els.error.hidden = true;
    els.error.textContent = '';
    els.error.setAttribute('data-state', 'idle');
  }

  // Shows a problem ({title, status, detail, instance, retryAfter}) in the alert region.
  function showError(p) {
    els.error.textContent = '';
    var heading = el('p', 'alert-title', p.title + (p.status ? ' (' + p.status + ')' : ''));
    els.error.appendChild(heading);
    if (p.detail) els.error.appendChild(el('p', 'alert-detail', p.detail));
    if (p.retryAfter) {
      els.error.appendChild(el('p', 'alert-retry',
        'The server is busy: try again in ' + plural(p.retryAfter, 'second', 'seconds') + '.'));
    }
    if (p.hint) els.error.appendChild(el('p', 'alert-hint', p.hint));
    if (p.requestId) els.error.appendChild(el('p', 'alert-meta', 'Request id: ' + p.requestId));
    els.error.setAttribute('data-state', 'error');
    els.error.hidden = false;
  }

  function requestIdOf(problem, xhr) {
    var instance = problem && typeof problem.instance === 'string' ? problem.instance : '';
    var prefix = 'urn:imagegate:request:';
    if (instance.indexOf(prefix) === 0) return instance.slice(prefix.length);
    return (xhr && xhr.getResponseHeader('X-Request-Id')) || '';
  }

  function parseRetryAfter(value) {
    if (!value) return 0;
    var secs = parseInt(value, 10);
    if (String(secs) === value.trim() && secs >= 0) return Math.max(1, secs);
    var date = Date.parse(value); // the HTTP-date form
    return isNaN(date) ? 0 : Math.max(1, Math.ceil((date - Date.now()) / 1000));
  }

  // ---------------------------------------------------------------- the batch

  function start() {
    if (run && run.active) return;
    clearError();
    if (!selected.length) {
      showError({ title: 'No images selected', detail: 'Drop images on the area above, or choose them with the picker.' });
      els.dropzone.focus();
      return;
    }
    if (!validate()) return;

    var form = new FormData();
    operationFields().forEach(function (pair) { form.append(pair[0], pair[1]); });
    selected.forEach(function (file) { form.append('file', file, file.name); });

    var xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/images/batch');
    var accept = ['text/event-stream'];
    if (supports.avif) accept.push('image/avif');
    if (supports.webp) accept.push('image/webp');
    xhr.setRequestHeader('Accept', accept.join(', '));
    var key = apiKey();
    if (key) {
      try {
        xhr.setRequestHeader('X-API-Key', key);
      } catch (e) {
        showError({ title: 'Invalid API key', detail: 'An API key is visible ASCII characters without spaces.' });
        els.apiKey.focus();
        return;
      }
    }

    clearResults();
    run = {
      xhr: xhr,
      key: key,
      active: true,
      rows: [],          // one per selected file, in order
      byIndex: {},       // batch index → row
      sizes: selected.map(function (f) { return f.size; }),
      seen: 0,           // characters of responseText already parsed
      streaming: false,
      finished: false,
      total: null,
      settled: 0
    };
    var plan = indexPlan(selected);
    selected.forEach(function (file, i) {
      var row = makeRow({ index: plan[i], name: file.name, size: file.size, file: i, archive: isArchive(file) });
      row.status.textContent = 'Waiting to upload…';
      run.rows.push(row);
      if (plan[i] !== null) run.byIndex[plan[i]] = row;
      els.results.appendChild(row.li);
    });
    els.empty.hidden = true;

    var thisRun = run;
    var parser = createSseParser(function (name, data) { onEvent(thisRun, name, data); });

    xhr.upload.onprogress = function (e) {
      if (thisRun !== run || !e.lengthComputable) return;
      showUploadProgress(thisRun, e.loaded / Math.max(1, e.total));
    };
    xhr.upload.onload = function () {
      if (thisRun !== run) return;
      showUploadProgress(thisRun, 1);
      enterProcessing(thisRun);
    };
    xhr.onreadystatechange = function () {
      if (xhr.readyState === 2) {
        var type = (xhr.getResponseHeader('Content-Type') || '').toLowerCase();
        thisRun.streaming = xhr.status === 200 && type.indexOf('text/event-stream') === 0;
        if (thisRun.streaming) enterProcessing(thisRun);
      } else if (xhr.readyState === 3) {
        pump(thisRun, parser);
      }
    };
    xhr.onprogress = function () { pump(thisRun, parser); };
    xhr.onload = function () {
      if (thisRun.streaming) {
        pump(thisRun, parser);
        parser.end();
        if (!thisRun.finished) {
          fail(thisRun, {
            title: 'The stream ended early',
            detail: 'The server closed the event stream before its done event.',
            requestId: xhr.getResponseHeader('X-Request-Id') || ''
          }, 'Not processed: the stream ended early.');
        }
      } else {
        requestFailed(thisRun, xhr);
      }
    };
    xhr.onerror = function () {
      if (thisRun.finished) return;
      fail(thisRun, {
        title: 'Network error',
        detail: 'The connection to the server failed or was closed before an answer arrived.',
        hint: thisRun.key ? '' : 'If the server has API keys on, type yours in the Access section and start again.'
      }, 'Not processed: the connection failed.');
    };
    xhr.onabort = function () {
      if (thisRun.finished) return;
      finish(thisRun);
      thisRun.rows.concat(dynamicRows(thisRun)).forEach(function (row) {
        if (!row.finished) row.status.textContent = 'Cancelled.';
      });
      setState('idle');
      els.summary.textContent = 'Cancelled.';
      announce('Cancelled.');
    };

    setState('uploading');
    setBusy(true);
    announce('Uploading ' + plural(selected.length, 'file', 'files') + ' (' + formatBytes(totalSize(selected)) + ')…');
    xhr.send(form);
  }

  // Maps the fraction of the request body sent onto the files in order, by their sizes (the
  // multipart framing is small next to images, so it is spread over them).
  function showUploadProgress(r, fraction) {
    var sent = Math.min(1, Math.max(0, fraction)) * r.sizes.reduce(function (a, b) { return a + b; }, 0);
    var offset = 0;
    r.rows.forEach(function (row, i) {
      var size = r.sizes[i];
      var mine = Math.min(size, Math.max(0, sent - offset));
      offset += size;
      if (!row.progress) return;
      row.progress.value = mine;
      if (row.finished) return;
      if (mine >= size) row.status.textContent = 'Uploaded; waiting for processing…';
      else if (mine > 0) row.status.textContent = 'Uploading… ' + Math.floor(mine / size * 100) + '%';
    });
  }

  function enterProcessing(r) {
    if (r.finished || document.body.getAttribute('data-state') === 'processing') return;
    setState('processing');
    r.rows.forEach(function (row) {
      if (row.progress) row.progress.value = row.progress.max;
      if (!row.finished) row.status.textContent = row.archive ? 'Unpacking and processing…' : 'Processing…';
    });
    announce('Upload complete; processing…');
  }

  function pump(r, parser) {
    if (!r.streaming) return;
    var text = r.xhr.responseText;
    if (text.length > r.seen) {
      parser.push(text.slice(r.seen));
      r.seen = text.length;
    }
  }

  function onEvent(r, name, data) {
    if (r !== run || r.finished) return;
    var payload;
    try {
      payload = JSON.parse(data);
    } catch (e) {
      return; // not ours
    }
    if (name === 'progress') onProgress(r, payload);
    else if (name === 'done') onDone(r, payload);
    else if (name === 'error') {
      fail(r, {
        title: payload.title || 'The batch failed',
        status: payload.status,
        detail: payload.detail,
        requestId: requestIdOf(payload, r.xhr)
      }, 'Not processed: the batch stopped.');
    }
  }

  // The row of a batch index: the file's own, or a new one for an item from an archive.
  function rowFor(r, index) {
    if (r.byIndex[index]) return r.byIndex[index];
    var row = makeRow({ index: index, name: 'Item ' + (index + 1) + ' of the batch' });
    row.li.classList.add('item');
    r.byIndex[index] = row;
    // Keep item rows in index order, after the files' own rows.
    var after = null;
    var items = els.results.querySelectorAll('li.item');
    for (var i = 0; i < items.length; i++) {
      if (Number(items[i].getAttribute('data-index')) > index) { after = items[i]; break; }
    }
    els.results.insertBefore(row.li, after);
    return row;
  }

  function dynamicRows(r) {
    return Object.keys(r.byIndex).map(function (k) { return r.byIndex[k]; })
      .filter(function (row) { return r.rows.indexOf(row) === -1; });
  }

  function onProgress(r, p) {
    if (typeof p.index !== 'number') return;
    enterProcessing(r);
    var row = rowFor(r, p.index);
    if (p.name && row.li.classList.contains('item') && row.nameEl) row.nameEl.textContent = p.name;
    if (row.finished) return;
    row.finished = true;
    r.settled++;
    if (p.success) showSuccess(r, row, p);
    else showFailure(row, p.error || 'This image could not be processed.');
    announce('Processed ' + r.settled + (r.total ? ' of ' + r.total : '') + '…');
  }

  function stat(list, term, value, className) {
    var dt = el('dt', null, term);
    var dd = el('dd', className, value);
    list.appendChild(dt);
    list.appendChild(dd);
    return dd;
  }

  function extensionOf(url) {
    var m = /\.([a-z0-9]+)$/i.exec(url || '');
    return m ? m[1].toLowerCase() : 'img';
  }

  function downloadName(row, url) {
    var base = row.li.classList.contains('item') ? 'item-' + row.li.getAttribute('data-index') : row.name.replace(/\.[^.]*$/, '');
    return (base || 'image') + '-imagegate.' + extensionOf(url);
  }

  function showSuccess(r, row, p) {
    row.li.classList.add('done');
    row.status.textContent = 'Done in ' + (typeof p.elapsed_ms === 'number' ? p.elapsed_ms + ' ms' : '?') + '.';
    var ratio = p.output_size > 0 ? p.original_size / p.output_size : 0;
    row.li.setAttribute('data-original-size', String(p.original_size));
    row.li.setAttribute('data-output-size', String(p.output_size));
    row.li.setAttribute('data-url', p.url);
    row.stats.textContent = '';
    stat(row.stats, 'Original', formatBytes(p.original_size), 'result-original');
    stat(row.stats, 'Output', formatBytes(p.output_size), 'result-output');
    var ratioText = ratio ? ratio.toFixed(2) : '?';
    var dd = stat(row.stats, 'Ratio', ratioText + '×', 'result-ratio');
    dd.setAttribute('data-ratio', ratioText);
    if (ratio) dd.classList.add(ratio >= 1 ? 'smaller' : 'larger');
    row.stats.hidden = false;

    var img = el('img', 'result-image');
    img.alt = 'Result for ' + row.name;
    img.decoding = 'async';
    var link = el('a', 'button button-small result-download', 'Download');
    link.setAttribute('download', downloadName(row, p.url));
    link.setAttribute('aria-label', 'Download the result for ' + row.name);
    row.actions.textContent = '';
    row.actions.appendChild(link);
    row.preview.textContent = '';
    row.preview.appendChild(img);

    var direct = function () { img.src = p.url; link.href = p.url; };
    if (!r.key) { direct(); return; }
    // With a key set, fetch the result with it (in case the server protects stored images too)
    // and show it from a blob: URL; fall back to the plain address.
    link.href = p.url;
    fetch(p.url, { headers: { 'X-API-Key': r.key } })
      .then(function (res) { return res.ok ? res.blob() : Promise.reject(new Error(String(res.status))); })
      .then(function (blob) {
        var u = URL.createObjectURL(blob);
        blobUrls.push(u);
        img.src = u;
        link.href = u;
      })
      .catch(direct);
  }

  function showFailure(row, message) {
    row.li.classList.add('failed');
    row.status.textContent = message;
    row.status.classList.add('result-error');
    row.preview.textContent = '';
    var mark = el('span', 'result-placeholder failed-mark', '!');
    mark.setAttribute('aria-hidden', 'true');
    row.preview.appendChild(mark);
  }

  function onDone(r, d) {
    r.total = d.total;
    finish(r);
    // Rows of archives (and files after one) have no index of their own: they are settled now.
    r.rows.forEach(function (row) {
      if (row.finished) return;
      row.finished = true;
      row.li.classList.add('done');
      row.status.textContent = row.archive
        ? 'Archive: its contents are listed as items of the batch.'
        : 'Processed in the batch: see the items listed below.';
    });
    var text = d.succeeded + ' of ' + d.total + ' done' + (d.failed ? ', ' + d.failed + ' failed' : '');
    els.summary.textContent = text;
    els.summary.setAttribute('data-state', 'done');
    setState('done');
    announce('Finished: ' + text + '.');
  }

  function finish(r) {
    r.finished = true;
    r.active = false;
    setBusy(false);
  }

  // The whole batch failed: show the problem, and mark every row not yet settled.
  function fail(r, problem, rowMessage) {
    if (r.finished) return;
    finish(r);
    r.rows.concat(dynamicRows(r)).forEach(function (row) {
      if (row.finished) return;
      row.finished = true;
      showFailure(row, rowMessage);
    });
    showError(problem);
    els.summary.textContent = problem.title;
    setState('error');
    announce('Failed: ' + problem.title + '.');
  }

  // A non-200 answer: a problem+json body (or something a proxy wrote).
  function requestFailed(r, xhr) {
    var problem = null;
    try {
      problem = JSON.parse(xhr.responseText);
    } catch (e) {
      problem = null;
    }
    if (!problem || typeof problem !== 'object') problem = {};
    var status = xhr.status;
    var info = {
      title: problem.title || xhr.statusText || 'The request failed',
      status: problem.status || status,
      detail: problem.detail || (status === 200
        ? 'The server did not answer with an event stream.'
        : 'The server answered ' + status + '.'),
      requestId: requestIdOf(problem, xhr)
    };
    if (status === 503) info.retryAfter = parseRetryAfter(xhr.getResponseHeader('Retry-After'));
    if (status === 401) {
      info.hint = r.key
        ? 'Check the API key in the Access section.'
        : 'This server has API keys on: type yours in the Access section and start again.';
    }
    fail(r, info, 'Not processed: the request failed.');
    if (status === 401) {
      els.apiKey.classList.add('needs-attention');
      els.apiKey.focus();
    }
  }

  function setBusy(busy) {
    els.start.disabled = busy;
    els.cancel.hidden = !busy;
    els.clear.disabled = busy;
    els.dropzone.setAttribute('aria-disabled', busy ? 'true' : 'false');
    els.form.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  // ---------------------------------------------------------------- drop zone

  function openPicker() {
    if (run && run.active) return;
    els.files.click();
  }

  function bindDropzone() {
    var depth = 0;
    els.dropzone.addEventListener('click', openPicker);
    els.dropzone.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ' || e.key === 'Spacebar') {
        e.preventDefault();
        openPicker();
      }
    });
    els.dropzone.addEventListener('dragenter', function (e) {
      e.preventDefault();
      depth++;
      els.dropzone.classList.add('is-dragover');
    });
    els.dropzone.addEventListener('dragover', function (e) {
      e.preventDefault();
      if (e.dataTransfer) e.dataTransfer.dropEffect = run && run.active ? 'none' : 'copy';
    });
    els.dropzone.addEventListener('dragleave', function () {
      depth = Math.max(0, depth - 1);
      if (!depth) els.dropzone.classList.remove('is-dragover');
    });
    els.dropzone.addEventListener('drop', function (e) {
      e.preventDefault();
      depth = 0;
      els.dropzone.classList.remove('is-dragover');
      var files = e.dataTransfer && e.dataTransfer.files;
      if (!files || !files.length || (run && run.active)) return;
      try { els.files.files = files; } catch (err) { /* older browsers: keep our own list */ }
      setSelection(Array.prototype.slice.call(files));
    });
    // A file dropped beside the zone must not replace the page.
    ['dragover', 'drop'].forEach(function (type) {
      window.addEventListener(type, function (e) {
        if (!els.dropzone.contains(e.target)) e.preventDefault();
      });
    });
  }

  // ---------------------------------------------------------------- start-up

  function probe(src, key) {
    var img = new Image();
    img.onload = function () { supports[key] = img.naturalWidth > 0; };
    img.src = src;
  }

  function init() {
    els = {
      form: $('upload-form'),
      files: $('files'),
      dropzone: $('dropzone'),
      selection: $('selection'),
      clear: $('clear'),
      operation: $('operation'),
      operationHint: $('operation-hint'),
      format: $('format'),
      width: $('width'),
      height: $('height'),
      keep: $('keep_aspect_ratio'),
      text: $('text'),
      apiKey: $('api-key'),
      start: $('start'),
      cancel: $('cancel'),
      status: $('status'),
      error: $('error'),
      summary: $('summary'),
      results: $('results'),
      empty: $('empty')
    };
    probe(AVIF_PROBE, 'avif');
    probe(WEBP_PROBE, 'webp');

    bindDropzone();
    els.files.addEventListener('change', function () {
      setSelection(Array.prototype.slice.call(els.files.files || []));
    });
    els.clear.addEventListener('click', function () {
      els.files.value = '';
      setSelection([]);
      announce('Selection cleared.');
      els.dropzone.focus();
    });
    els.operation.addEventListener('change', applyOperation);
    [els.width, els.height, els.keep, els.text].forEach(function (c) {
      c.addEventListener('input', function () { c.setCustomValidity(''); els.width.setCustomValidity(''); });
    });
    els.apiKey.addEventListener('input', function () { els.apiKey.classList.remove('needs-attention'); });
    els.form.addEventListener('submit', function (e) {
      e.preventDefault();
      start();
    });
    els.cancel.addEventListener('click', function () {
      if (run && run.active) run.xhr.abort();
      els.start.focus();
    });
    applyOperation();
    // A selection kept by the browser across a reload.
    if (els.files.files && els.files.files.length) setSelection(Array.prototype.slice.call(els.files.files));
    setState('idle');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}());
