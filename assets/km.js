/*! idgraph browser tracker (km.js): the KISSmetrics identity rules in the browser.
 *
 * Load it with the usual snippet:
 *   <script>var _kmq = _kmq || []; var _kmk = _kmk || 'API_KEY';</script>
 *   <script async src="https://HOST/km.js"></script>
 * Commands: _kmq.push(['record', name, props]), ['set', props], ['identify', id],
 * ['alias', a, b], ['clearIdentity'], ['trackSubmit', formIdOrElementOrClass, name, props],
 * ['trackClick', idOrElementOrClass, name, props], or a function (runs once loaded).
 * KM.i() is the current ID. Requests are image GETs to the host this script came from:
 * /e, /s, /a, exactly as spec/tracking-api.md writes them.
 *
 * On load: the commands queued before it run in order, then the URL API (kmi, kme, km_*), then
 * a browser without cookies gets its anonymous ID. A queued function may replace KM.now
 * (seconds) and KM.newId (a new anonymous ID) before anything is sent: tests do.
 * Dependency-free; no build step.
 */
(function (w, d) {
  'use strict';
  if (w.KM && w.KM._loaded) return;

  var AI = 'km_ai', NI = 'km_ni';
  var FIVE_YEARS = 5 * 365 * 24 * 3600;
  var NULLS = ['', 'null', 'nil', "'null'", "'nil'", '"null"', '"nil"', "''", '""'];
  var SENSITIVE = /pass|billing|creditcard|cardnum|^cc|ccnum|exp|seccode|securitycode|securitynum|cvc|cvv|ssn|socialsec|socsec|csc/i;
  var IDENTITY = /userid|login|username|email/i;
  var CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

  function warn(msg) {
    if (w.console && w.console.warn) w.console.warn('km.js: ' + msg);
  }

  // Where requests go: the origin this script was loaded from.
  var script = d.currentScript;
  if (!script) {
    var all = d.getElementsByTagName('script');
    for (var s = all.length - 1; s >= 0; s--) {
      if (/\/(km|[^\/?#]+\.2)\.js(\?|$)/.test(all[s].src)) { script = all[s]; break; }
    }
  }
  var base = '';
  if (script && script.src) {
    var m = /^(https?:\/\/[^\/?#]+)/i.exec(script.src);
    if (m) base = m[1];
  }

  // ---- cookies
  function getCookie(name) {
    var parts = d.cookie ? d.cookie.split('; ') : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf('=');
      if (parts[i].slice(0, eq) === name) {
        try { return decodeURIComponent(parts[i].slice(eq + 1)); } catch (e) { return parts[i].slice(eq + 1); }
      }
    }
    return null;
  }
  function setCookie(name, value) {
    d.cookie = name + '=' + encodeURIComponent(value) + '; max-age=' + FIVE_YEARS + '; path=/; SameSite=Lax';
  }
  function removeCookie(name) {
    d.cookie = name + '=; max-age=0; path=/; SameSite=Lax';
  }

  // ---- validation (the store's rules: 1 to 255 characters, no control characters)
  function chars(s) { return Array.from ? Array.from(s).length : s.length; }
  function validId(id) {
    return typeof id === 'string' && id.length > 0 && chars(id) <= 255 && !CONTROL.test(id);
  }
  var validName = validId;

  // ---- identity state
  function ai() {
    var a = getCookie(AI);
    if (!a || !validId(a)) {                       // missing, empty or not an ID: a new one
      a = KM.newId();
      setCookie(AI, a);
    }
    return a;
  }
  function ni() { return getCookie(NI); }

  function isNull(id) {
    return id === undefined || id === null || NULLS.indexOf(String(id)) >= 0;
  }

  // ---- requests
  function enc(s) { return encodeURIComponent(String(s)); }
  function send(path) {
    KM.sent.push(path);
    var img = new Image(1, 1);
    var done = new Promise(function (resolve) {
      img.onload = img.onerror = function () { resolve(); };
    });
    img.src = base + path;
    KM._inflight.push(done);
    return done;
  }
  function tail(who) {
    return '_k=' + enc(w._kmk || '') + '&_p=' + enc(who) + '&_t=' + KM.now();
  }
  function query(props) {
    var q = '';
    for (var i = 0; i < props.length; i++) q += enc(props[i][0]) + '=' + enc(props[i][1]) + '&';
    return q;
  }

  // Properties: an ordered list of [name, value]; names are case-insensitive (a later value
  // replaces an earlier one and keeps its first spelling).
  function putProp(list, name, value) {
    if (!validName(name)) { warn('skipped the property ' + JSON.stringify(name) + ': a name must be 1 to 255 characters without control characters'); return; }
    if (name.charAt(0) === '_') { warn('skipped the property ' + JSON.stringify(name) + ': names starting with _ are KISSmetrics parameters (_p, _n, _t, ...)'); return; }
    var lower = name.toLowerCase();
    for (var i = 0; i < list.length; i++) {
      if (list[i][0].toLowerCase() === lower) { list[i][1] = String(value); return; }
    }
    list.push([name, String(value)]);
  }
  function propList(obj) {
    var list = [];
    if (obj && typeof obj === 'object') {
      for (var k in obj) {
        if (Object.prototype.hasOwnProperty.call(obj, k) && obj[k] !== undefined && obj[k] !== null) putProp(list, k, obj[k]);
      }
    }
    return list;
  }

  // ---- the identity rules (spec/identity-rules.md)
  function identify(id) {
    if (isNull(id)) { clearIdentity(); return; }
    id = String(id);
    if (!validId(id)) { warn('identify: ' + JSON.stringify(id) + ' is not a valid ID'); return; }
    var named = ni();
    if (named === id) return;
    if (!named) {
      var anon = ai();
      if (id !== anon) alias(anon, id);
    }
    setCookie(NI, id);
  }
  function alias(a, b) {
    a = String(a); b = String(b);
    if (!validId(a) || !validId(b)) { warn('alias: both IDs must be valid'); return; }
    if (a === b) return;
    send('/a?_n=' + enc(b) + '&_p=' + enc(a) + '&' + '_k=' + enc(w._kmk || '') + '&_t=' + KM.now());
  }
  function recordList(name, props) {
    if (!validName(name)) { warn('record: ' + JSON.stringify(name) + ' is not a valid event name'); return; }
    send('/e?' + query(props) + '_n=' + enc(name) + '&' + tail(KM.i()));
  }
  function record(name, props) {
    recordList(name, propList(props));
  }
  function setList(props) {
    if (props.length) send('/s?' + query(props) + tail(KM.i()));
  }
  function set(props) { setList(propList(props)); }
  function clearIdentity() {
    if (ni()) {
      removeCookie(NI);
      setCookie(AI, KM.newId());
    }
  }

  // ---- form-field capture (trackSubmit)
  function propertyName(name) {
    var b = name.slice(-2) === '[]' ? name.slice(0, -2) : name;
    var open = b.indexOf('[');
    if (open > 0) {
      var close = b.indexOf(']', open);
      if (close > 0) return b.slice(0, open) + '_' + b.slice(open + 1, close) + b.slice(close + 1);
    }
    return b;
  }
  function fieldKey(name) { return propertyName(name).replace(/[_-]/g, '').toLowerCase(); }
  // Class lists are separated by any ASCII whitespace (tabs, newlines), as classList reads them.
  function hasClass(el, c) {
    if (el.classList) return el.classList.contains(c);
    return (' ' + String(el.className || '').replace(/[\t\n\f\r]/g, ' ') + ' ').indexOf(' ' + c + ' ') >= 0;
  }
  function isPassword(el) {
    return el.tagName.toLowerCase() === 'input' && (el.getAttribute('type') || '').toLowerCase() === 'password';
  }
  function captured(el) {
    var name = el.getAttribute('name') || '';
    if (!name || isPassword(el)) return false;     // rule 5; a password never, even with km_include
    if (hasClass(el, 'km_include')) return true;   // rule 1
    if (hasClass(el, 'km_ignore')) return false;   // rule 2
    var tag = el.tagName.toLowerCase();
    var type = (el.getAttribute('type') || 'text').toLowerCase();
    var key = fieldKey(name);
    var ok = tag === 'select' ||
      (tag === 'input' && (type === 'text' || type === 'radio' || type === 'checkbox' || IDENTITY.test(key)));
    if (!ok || SENSITIVE.test(key)) return false;  // rules 3, 4, 6
    if (tag === 'input' && (type === 'radio' || type === 'checkbox')) return el.checked; // rule 7
    return true;
  }
  function capture(form) {
    var props = [], index = {}, identity = null;
    var els = form.elements || [];
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      if (!el.tagName || !captured(el)) continue;
      var raw = el.getAttribute('name');
      var name = propertyName(raw), multi = raw.slice(-2) === '[]', value = String(el.value);
      var key = fieldKey(raw);
      // A sensitive field never identifies, even when km_include captures it.
      if (identity === null && value !== '' && IDENTITY.test(key) && !SENSITIVE.test(key)) identity = value;
      var folded = '$' + name.toLowerCase(), found = index[folded];
      if (found && (multi || found.multi)) found.values.push(value);
      else if (found) found.values = [value];
      else props.push(index[folded] = { name: name, values: [value], multi: multi });
    }
    var out = [];
    for (var p = 0; p < props.length; p++) {
      var vals = props[p].values;
      if (props[p].multi) vals.sort();
      out.push([props[p].name, vals.join(',')]);
    }
    return { props: out, identity: identity };
  }

  function elements(target) {
    if (!target) return [];
    if (target.nodeType === 1) return [target];
    target = String(target);
    if (/^[#.]/.test(target)) return Array.prototype.slice.call(d.querySelectorAll(target));
    var byId = d.getElementById(target);
    if (byId) return [byId];
    return Array.prototype.slice.call(d.getElementsByClassName(target));
  }
  function whenReady(fn) {
    if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', fn);
    else fn();
  }
  // Sends what a submit or click asks for; the page then goes on once the requests are done.
  function settle(then) {
    var pending = KM._inflight.splice(0);
    var timer = new Promise(function (r) { setTimeout(r, 500); });
    Promise.race([Promise.all(pending), timer]).then(then);
  }

  function submitted(form, name, props) {
    var list = propList(props);
    if (KM.trackForms) {
      var c = capture(form);
      if (!ni() && c.identity !== null) identify(c.identity);
      for (var i = 0; i < c.props.length; i++) putProp(list, c.props[i][0], c.props[i][1]);
    }
    recordList(name, list);
  }
  function trackSubmit(target, name, props) {
    whenReady(function () {
      var forms = elements(target);
      if (!forms.length) warn('trackSubmit: no form matches ' + JSON.stringify(String(target)));
      forms.forEach(function (form) {
        form.addEventListener('submit', function (ev) {
          submitted(form, name, props);
          ev._km = true;
        });
      });
    });
  }
  // After the page's own handlers: hold a tracked submit until its requests are sent, unless
  // the page already stopped it (then the page handles the form itself).
  w.addEventListener('submit', function (ev) {
    if (!ev._km || ev.defaultPrevented) return;
    ev.preventDefault();
    var form = ev.target, by = ev.submitter;
    settle(function () {
      if (by && by.name) {
        var h = d.createElement('input');
        h.type = 'hidden'; h.name = by.name; h.value = by.value;
        form.appendChild(h);
      }
      HTMLFormElement.prototype.submit.call(form);
    });
  });
  function trackClick(target, name, props) {
    whenReady(function () {
      elements(target).forEach(function (el) {
        el.addEventListener('click', function (ev) {
          record(name, props);
          var a = el.closest ? el.closest('a[href]') : null;
          var plain = ev.button === 0 && !ev.metaKey && !ev.ctrlKey && !ev.shiftKey && !ev.altKey;
          if (a && plain && !ev.defaultPrevented && (!a.target || a.target === '_self')) {
            ev.preventDefault();
            settle(function () { w.location.href = a.href; });
          }
        });
      });
    });
  }

  // ---- the URL API
  function urlApi(search) {
    var q = (search || '').replace(/^\?/, '');
    var identity = null, event = null, props = [];
    if (q) {
      var pairs = q.split('&');
      for (var i = 0; i < pairs.length; i++) {
        if (!pairs[i]) continue;
        var eq = pairs[i].indexOf('=');
        var k = dec(eq < 0 ? pairs[i] : pairs[i].slice(0, eq));
        var v = eq < 0 ? '' : dec(pairs[i].slice(eq + 1));
        if (k === null || v === null) continue;      // not UTF-8 (%FF): skipped
        if (k.slice(0, 2) !== 'km') continue;
        var rest = k.slice(2);
        if (rest.charAt(0) === '_') rest = rest.slice(1);
        if (rest === '') continue;
        if (rest === 'i') { if (identity === null) identity = v; }
        else if (rest === 'e') { if (event === null) event = v; }
        else {
          var seen = false;
          for (var j = 0; j < props.length; j++) if (props[j][0] === rest) seen = true;
          if (!seen) putProp(props, rest, v);
        }
      }
    }
    // Checked before anything changes: a visit that fails changes no cookie, sends nothing.
    if (event === '') event = null;                // an empty kme is no event
    if (event !== null && !validName(event)) { warn('URL: kme ' + JSON.stringify(event) + ' is not a valid event name'); return; }
    if (identity !== null && !isNull(identity) && !validId(identity)) { warn('URL: kmi ' + JSON.stringify(identity) + ' is not a valid ID'); return; }
    if (identity !== null) identify(identity);
    if (event !== null) recordList(event, props);
    else setList(props);
  }
  function dec(s) {
    s = s.replace(/\+/g, ' ');
    try { return decodeURIComponent(s); } catch (e) { return null; }
  }

  var COMMANDS = {
    identify: identify,
    alias: alias,
    record: record,
    set: set,
    clearIdentity: clearIdentity,
    trackSubmit: trackSubmit,
    trackClick: trackClick
  };
  function run(item) {
    try {
      if (typeof item === 'function') { item(); return; }
      if (!item || !item.length) return;
      var f = COMMANDS[item[0]];
      if (!f) { warn('unknown command ' + JSON.stringify(item[0])); return; }
      f.apply(null, Array.prototype.slice.call(item, 1));
    } catch (e) {
      warn('command ' + JSON.stringify(item && item[0]) + ' failed: ' + e);
    }
  }

  var KM = {
    _loaded: true,
    /** The current ID: km_ni when identified, else km_ai (made first if absent). */
    i: function () { return ni() || ai(); },
    identify: identify,
    alias: alias,
    record: record,
    set: set,
    clearIdentity: clearIdentity,
    trackSubmit: trackSubmit,
    trackClick: trackClick,
    /** Form-field tracking (on by default, as in KISSmetrics). */
    trackForms: true,
    /** The paths of every request sent so far (for debugging and the demo page). */
    sent: [],
    _inflight: [],
    /** Unix time in seconds, sent as _t. */
    now: function () { return Math.floor(Date.now() / 1000); },
    /** A new anonymous ID in KISSmetrics' format: standard base64 of 20 random bytes
     *  (28 characters ending in '='), as its SHA-1 of random input looks. */
    newId: function () {
      var b = new Uint8Array(20);
      (w.crypto || w.msCrypto).getRandomValues(b);
      var s = '';
      for (var i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
      return w.btoa(s);
    },
    _rules: { capture: capture, propertyName: propertyName, fieldKey: fieldKey, urlApi: urlApi }
  };
  w.KM = KM;

  var queued = w._kmq && w._kmq.length ? Array.prototype.slice.call(w._kmq) : [];
  w._kmq = { push: function () { for (var i = 0; i < arguments.length; i++) run(arguments[i]); return 0; } };
  for (var q = 0; q < queued.length; q++) run(queued[q]);
  urlApi(w.location.search);
  ai();
})(window, document);
