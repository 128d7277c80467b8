// The host's console (docs/contract.md §8). Plain JavaScript, no build step, nothing from outside the daemon.
"use strict";
(function () {
  var I18N = {
    zh: {
      tab_board: "看板", tab_orders: "订单", tab_feed: "动态", tab_charts: "图表", tab_summary: "汇总",
      login_title: "主播控制台", login_token: "控制口令", login_button: "登录", login_wrong: "口令不对",
      comments_s: "评论/秒", orders_s: "订单/秒", comments: "评论", orders: "订单", revenue_paid: "已付收入",
      revenue_held: "待付收入", featured: "当前讲解", paused: "已暂停接单", pause: "暂停接单", resume: "继续接单",
      product: "商品", stock: "库存", left: "剩余", reserved: "已订", presale: "预售", adapters: "直播间连接",
      held: "待付", paid: "已付", queue: "排队", feature: "讲解", restock: "补货", quantity: "数量", apply: "确定",
      cancel: "取消", cancel_sure: "确认取消？", back: "返回", presale_ctl: "预售", cap: "上限", open: "开启", close: "关闭", limit: "限购",
      search_label: "买家名 / 用户 / 订单号", status: "状态", all: "全部", unpaid: "待付款", search: "搜索",
      st_reserved: "已订", st_presale: "预售", st_paid: "已付", st_cancelled: "已取消", st_expired: "已过期",
      st_rejected: "未成交", st_promoted: "转正",
      pay_selected: "选中的标为已付", pay: "标为已付", order: "订单", buyer: "买家", qty: "数量", pay_by: "付款期限",
      place: "排位", applied: "已执行", refused: "未执行", connected: "已连接", disconnected: "未连接",
      reconnects: "重连", malformed: "无效消息", received: "收到", live: "实时", reconnecting: "重新连接中…",
      chart_rates: "每秒评论 / 订单", chart_sell: "售罄进度", found: "条", queue_of: "预售排队：",
      orders_of: "买家的订单：", ev_sold_out: "售罄", ev_presale_opened: "开始预售", ev_presale_full: "预售满",
      ev_low_stock: "库存紧张", host: "主播操作", none: "无", in_queue: "排队 %d 单",
      unreachable: "连不上直播助手，请检查网络后再点一次（同一操作不会重复执行）", busy: "处理中…",
      logout: "退出", more: "更多", shown: "显示 %d / %d 条", limit_each: "每人限购 %d",
      act_feature: "讲解", act_restock: "补货", act_presale: "预售", act_limit: "限购", act_pay: "标为已付",
      act_cancel: "取消订单", act_pause: "暂停接单", act_resume: "继续接单", act_status: "查看状态",
      rs_sold_out: "售罄", rs_limit: "超出限购", rs_unknown_product: "没有这个商品", rs_needs_variant: "要选规格",
      rs_not_available: "暂不可买", rs_bad_quantity: "数量不对",
      err_no_order: "没有订单 {order}", err_not_held: "订单 {order} 是「{status}」，只有待付款的订单能标为已付",
      err_already: "订单 {order} 已经是「{status}」", err_no_product: "没有商品 {sku}",
      err_has_variants: "{sku} 有多个规格（{variants}），请选一个", err_no_variants: "{sku} 没有规格",
      err_no_variant: "{sku} 没有规格「{variant}」", err_bad_quantity: "补货数量要是 1 或以上的整数（收到 {value}）",
      err_bad_cap: "预售上限要是 0 或以上的整数（收到 {value}）", err_bad_limit: "限购要是 0 或以上的整数（收到 {value}）",
      err_no_presale_cap: "{key} 在配置里没有预售数量，请填写上限",
      restarted: "直播助手已重新启动 · 下面是之前的订单（当前状态）"
    },
    en: {
      tab_board: "Board", tab_orders: "Orders", tab_feed: "Feed", tab_charts: "Charts", tab_summary: "Summary",
      login_title: "Host console", login_token: "Control token", login_button: "Log in", login_wrong: "Wrong token",
      comments_s: "Comments/s", orders_s: "Orders/s", comments: "Comments", orders: "Orders",
      revenue_paid: "Revenue paid", revenue_held: "Revenue held", featured: "Featured", paused: "Intake paused",
      pause: "Pause", resume: "Resume", product: "Product", stock: "Stock", left: "Left", reserved: "Reserved",
      presale: "Presale", adapters: "Stream connections", held: "held", paid: "paid", queue: "Queue",
      feature: "Feature", restock: "Restock", quantity: "Quantity", apply: "Apply", cancel: "Cancel", cancel_sure: "Cancel it?", back: "Back",
      presale_ctl: "Presale", cap: "Cap", open: "Open", close: "Close", limit: "Limit",
      search_label: "Buyer name, user id or order id", status: "Status", all: "All", unpaid: "Unpaid holds",
      search: "Search", st_reserved: "held", st_presale: "presale", st_paid: "paid", st_cancelled: "cancelled",
      st_expired: "expired", st_rejected: "rejected", st_promoted: "promoted",
      pay_selected: "Mark selected paid", pay: "Mark paid", order: "Order", buyer: "Buyer", qty: "Qty",
      pay_by: "Pay by", place: "Place", applied: "Applied", refused: "Not applied", connected: "connected",
      disconnected: "disconnected", reconnects: "reconnects", malformed: "malformed", received: "received",
      live: "live", reconnecting: "reconnecting…", chart_rates: "Comments / orders per second",
      chart_sell: "Sell-through", found: "found", queue_of: "Presale queue: ", orders_of: "Orders of ",
      ev_sold_out: "sold out", ev_presale_opened: "presale opened", ev_presale_full: "presale full",
      ev_low_stock: "low stock", host: "host", none: "none", in_queue: "%d orders queued",
      unreachable: "Cannot reach livecart: check the connection and tap again (it will not be applied twice)",
      busy: "working…", logout: "Log out", more: "More", shown: "showing %d of %d", limit_each: "limit %d each",
      act_feature: "feature", act_restock: "restock", act_presale: "presale", act_limit: "limit", act_pay: "paid",
      act_cancel: "cancel", act_pause: "pause", act_resume: "resume", act_status: "status",
      rs_sold_out: "sold out", rs_limit: "over the limit", rs_unknown_product: "no such product",
      rs_needs_variant: "which variant?", rs_not_available: "not available", rs_bad_quantity: "bad quantity",
      restarted: "livecart started again · the orders before it, as they stand now"
    }
  };
  var params = new URLSearchParams(location.search);
  var lang = params.get("lang");
  var T = I18N.zh;
  var csrf = "";
  var state = null;
  var source = null;
  var retry = null;
  var rows = {};         // key -> row element
  // A silent network drop (the phone's Wi-Fi stalls, no reset) closes nothing: the stream just goes quiet and
  // requests wait forever. The daemon sends a delta at least once a second while it runs (each carries the
  // per-second rate sample), so a stream quiet for STALL ms is dead: it is closed and opened again. And every
  // request gives up after TIMEOUT ms, answered like one that could not connect. ?stall=SECONDS shortens the
  // first for tests.
  var STALL = Math.max(3, Number(params.get("stall")) || 30) * 1000;
  var TIMEOUT = 10000;
  var heard = 0;         // when the event stream last said anything (Date.now())
  var watchdog = null;
  // A browser opens at most six HTTP/1.1 connections to one host, and the event stream holds one for as long
  // as the page lives: six console tabs left open would make a seventh, and every control tap, wait forever.
  // So a tab that stays in the background for HIDDEN ms lets go of its stream (a quick look at another app
  // keeps it), and connects again, with the sale as it stands, when it is shown.
  var HIDDEN = 3000;
  var away = false;      // the stream was let go because the tab is in the background
  var hiding = null;
  var current = "board";
  var ordersView = {kind: "search"};

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { for (var k in attrs) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function button(label, onclick, cls) {
    var b = el("button", {type: "button"}, label);
    if (cls) { b.className = cls; }
    b.addEventListener("click", onclick);
    return b;
  }
  // A button for what cannot be undone (cancelling an order): the first tap asks ("Cancel it?"), a second
  // tap between 0.6 s and 5 s later does it; a double tap, or no second tap, leaves it as it was. The
  // question outlives the list's re-rendering (it follows the sale every 2 s): kept by ``id``.
  var asked = {};
  function confirmButton(id, label, sure, act) {
    var b = button(label, function () {
      var now = Date.now(), at = asked[id];
      if (at && now - at < 600) { return; }  // a double tap
      if (at && now - at < 5000) { delete asked[id]; show(); act(b); return; }
      asked[id] = now;
      show();
      setTimeout(function () { if (asked[id] === now) { delete asked[id]; } show(); }, 5000);
    });
    function show() {
      var on = asked[id] && Date.now() - asked[id] < 5000;
      b.textContent = on ? sure : label;
      b.classList.toggle("danger", !!on);
    }
    show();
    return b;
  }
  var num = LivecartSummary.num, money = LivecartSummary.money, clock = LivecartSummary.clock;

  function setLanguage(code) {
    lang = code === "en" ? "en" : "zh";
    T = I18N[lang];
    document.documentElement.lang = lang;
    var nodes = document.querySelectorAll("[data-i18n]");
    for (var i = 0; i < nodes.length; i++) { nodes[i].textContent = T[nodes[i].getAttribute("data-i18n")] || ""; }
  }

  function toast(text, bad) {
    var t = $("toast");
    t.textContent = text;
    t.className = bad ? "toast bad" : "toast";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.hidden = true; }, 4000);
  }

  function api(method, path, body) {
    var opts = {method: method, credentials: "same-origin", headers: {}};
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = csrf;
      opts.body = JSON.stringify(body);
    }
    if (body !== undefined && arguments.length > 3) { opts.headers["Idempotency-Key"] = arguments[3]; }
    // No answer within TIMEOUT (a silent drop: nothing fails, nothing comes) counts as no answer at all.
    var abort = typeof AbortController === "function" ? new AbortController() : null;
    var timer = null;
    if (abort) {
      opts.signal = abort.signal;
      timer = setTimeout(function () { abort.abort(); }, TIMEOUT);
    }
    function unreachable() {
      // No answer at all (the phone lost the network, the daemon is down): said, never thrown away.
      clearTimeout(timer);
      return {ok: false, error: T.unreachable, httpStatus: 0, unreachable: true};
    }
    return fetch(path, opts).then(function (r) {
      return r.json().then(function (data) { clearTimeout(timer); data.httpStatus = r.status; return data; },
        function () {
          if (abort && abort.signal.aborted) { return unreachable(); }  // the answer stalled half-way
          clearTimeout(timer);
          return {ok: false, error: "HTTP " + r.status, httpStatus: r.status};
        });
    }, unreachable);
  }

  // One key per host action: a tap sent again after no answer reuses it, so the daemon applies it once.
  function newKey() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);  // works on plain http too (randomUUID needs a secure context)
    return Array.prototype.map.call(b, function (x) { return ("0" + x.toString(16)).slice(-2); }).join("");
  }

  // ------------------------------------------------------------------ login and session

  function showLogin() {
    if (source) { source.close(); source = null; }
    $("tabs").hidden = true;
    $("logout").hidden = true;
    ["board", "orders", "feed", "charts", "summary"].forEach(function (p) { $(p).hidden = true; });
    $("login").hidden = false;
    $("token").focus();
  }

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var token = $("token").value;
    fetch("/console/login", {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
                             body: JSON.stringify({token: token})})
      .then(function (r) {
        $("token").value = "";
        if (r.status === 429) {  // too many wrong tokens from here: the daemon says how long to wait
          r.json().then(function (b) { $("login-error").textContent = b.error || T.login_wrong; });
          return;
        }
        if (r.status !== 200) { $("login-error").textContent = T.login_wrong; return; }
        $("login-error").textContent = "";
        boot();
      });
  });

  function boot() {
    api("GET", "/console/api/session").then(function (s) {
      if (s.login) { showLogin(); return; }
      if (!s.ok) { scheduleReconnect(); return; }
      csrf = s.csrf;
      if (!params.get("lang")) { setLanguage(s.language); }
      $("stream-name").textContent = s.stream;
      document.title = s.stream + " · livecart";
      $("login").hidden = true;
      $("tabs").hidden = false;
      $("logout").hidden = false;
      show(current);
      connect();
    }).catch(scheduleReconnect);
  }

  // ------------------------------------------------------------------ live updates

  function setConn(ok) {
    $("conn").textContent = ok ? T.live : T.reconnecting;
    $("conn").className = ok ? "conn ok" : "conn down";
  }

  function connect() {
    if (away) { return; }
    if (source) { source.close(); }
    source = new EventSource("/console/api/events");
    heard = Date.now();
    if (!watchdog) { watchdog = setInterval(checkStream, 1000); }
    source.addEventListener("full", function (e) { heard = Date.now(); setConn(true); full(JSON.parse(e.data)); });
    source.addEventListener("delta", function (e) { heard = Date.now(); delta(JSON.parse(e.data)); });
    source.addEventListener("ping", function () { heard = Date.now(); });  // should the daemon send one
    source.onerror = function () {
      // The daemon went away or refused the stream: close, and try again (session first) after a pause.
      source.close();
      source = null;
      setConn(false);
      scheduleReconnect();
    };
  }

  // Nothing on the stream for STALL (not even the per-second delta, nor the full state of a new connection):
  // the connection is dead without having said so. Same as an error: "reconnecting…", then a new one.
  function checkStream() {
    if (!source || Date.now() - heard < STALL) { return; }
    source.close();
    source = null;
    scheduleReconnect();
  }

  function scheduleReconnect() {
    setConn(false);
    clearTimeout(retry);
    if (!away) { retry = setTimeout(boot, 1000); }
  }

  function visibility() {
    clearTimeout(hiding);
    if (document.visibilityState === "hidden") {
      hiding = setTimeout(function () {
        away = true;
        clearTimeout(retry);
        if (source) { source.close(); source = null; }
        setConn(false);
      }, HIDDEN);
    } else if (away) {
      away = false;
      boot();
    }
  }
  document.addEventListener("visibilitychange", visibility);
  visibility();  // a tab opened in the background (middle-click) starts hidden, with no event to say so

  function full(s) {
    state = s;
    buildProducts();
    renderTotals();
    renderAdapters();
    $("feed-list").textContent = "";
    addFeed(s.feed);
    if (current === "charts") { renderCharts(); }
    // A new stream (the tab back from the background, the daemon back from a restart): the orders on screen
    // may have changed meanwhile, with no delta to say so.
    ordersChanged();
  }

  function delta(d) {
    if (!state) { return; }
    ["featured", "paused", "comments", "orders", "outcomes", "rates", "adapters", "revenue"].forEach(function (k) {
      if (k in d) { state[k] = d[k]; }
    });
    if (d.products) {
      for (var key in d.products) { state.products[key] = d.products[key]; updateRow(key); }
      updateParents();
    }
    if (d.sample) { state.history.push(d.sample); }
    renderTotals();
    if (d.adapters) { renderAdapters(); }
    if (d.feed) {
      addFeed(d.feed);
      if (d.feed.some(function (f) { return f.kind === "outcome" && f.order; })) { ordersChanged(); }
    }
    if (current === "charts" && (d.sample || d.products)) { renderCharts(); }
  }

  // ------------------------------------------------------------------ board

  function productName(key) { return (state.names && state.names[key]) || key; }

  function field(name) { return el("span", {"data-field": name}, "0"); }

  function buildProducts() {
    var body = $("products");
    // A form left open (its control got no answer, the page reconnected) stays open, value and all, so that
    // the host can tap again with the same key.
    var form = body.querySelector("tr.form-row");
    body.textContent = "";
    rows = {};
    var keys = Object.keys(state.products);
    var parents = {};
    keys.forEach(function (key) {
      var sku = key.split("/")[0];
      if (key.indexOf("/") > 0 && !parents[sku]) {
        parents[sku] = true;
        body.appendChild(makeRow(sku, true, false));
      }
      body.appendChild(makeRow(key, key.indexOf("/") < 0, key.indexOf("/") > 0));
    });
    keys.forEach(updateRow);
    updateParents();
    var under = form && rows[form.getAttribute("data-for")];
    if (under) { body.insertBefore(form, under.nextSibling); }
  }

  function makeRow(key, isProduct, isVariant) {
    var tr = el("tr", {"data-sku": key});
    tr.className = isVariant ? "variant" : "product";
    var name = el("td", {"class": "name"});
    name.appendChild(el("span", {"class": "pname"}, isVariant ? key.split("/").slice(1).join("/") : productName(key)));
    name.appendChild(el("small", {"class": "sku"}, key.split("/")[0]));
    if (isProduct) { name.appendChild(el("small", {"class": "limit", "data-limit": "1"})); }
    tr.appendChild(name);
    var stock = el("td"); stock.appendChild(field("stock")); tr.appendChild(stock);
    var left = el("td"); left.appendChild(field("left")); tr.appendChild(left);
    var reserved = el("td"); reserved.appendChild(field("reserved"));
    reserved.appendChild(el("small", {"class": "split", "data-split": "1"}));
    tr.appendChild(reserved);
    var presale = el("td"); presale.appendChild(field("presale"));
    presale.appendChild(el("small", {"class": "cap", "data-cap": "1"}));
    tr.appendChild(presale);
    var td = el("td", {"class": "acts"});
    var acts = el("div");
    td.appendChild(acts);
    var sku = key.split("/")[0];
    var isUnit = key in state.products;
    if (isProduct) {
      acts.appendChild(button(T.feature, function (ev) { control({action: "feature", sku: sku}, ev.currentTarget); }, "feature"));
      acts.appendChild(button(T.limit, function () { openForm(tr, "limit", key); }));
    }
    if (isUnit) {
      acts.appendChild(button(T.restock, function () { openForm(tr, "restock", key); }));
      acts.appendChild(button(T.presale_ctl, function () { openForm(tr, "presale", key); }));
      acts.appendChild(button(T.queue, function () { showQueue(key); }));
    }
    tr.appendChild(td);
    rows[key] = tr;
    return tr;
  }

  function setField(tr, name, value) {
    var f = tr.querySelector('[data-field="' + name + '"]');
    if (f && f.textContent !== String(value)) { f.textContent = String(value); }
  }

  function updateRow(key) {
    var tr = rows[key], p = state.products[key];
    if (!tr || !p) { return; }
    setField(tr, "stock", p.stock);
    setField(tr, "left", p.left);
    setField(tr, "reserved", p.reserved);
    setField(tr, "presale", p.presale);
    tr.querySelector("[data-split]").textContent = p.held + " " + T.held + " · " + p.paid + " " + T.paid;
    tr.querySelector("[data-cap]").textContent = p.cap ? T.in_queue.replace("%d", p.queue) + " · " + T.cap + " " + p.cap : "";
    var lim = tr.querySelector("[data-limit]");
    if (lim) { lim.textContent = p.limit ? T.limit_each.replace("%d", p.limit) : ""; }
    tr.classList.toggle("soldout", p.left === 0);
    var featured = state.featured === key.split("/")[0];
    tr.classList.toggle("featured", featured && key.indexOf("/") < 0);
  }

  function updateParents() {
    var sums = {};
    for (var key in state.products) {
      if (key.indexOf("/") < 0) { continue; }
      var sku = key.split("/")[0], p = state.products[key];
      var s = sums[sku] || (sums[sku] = {stock: 0, left: 0, reserved: 0, presale: 0, held: 0, paid: 0});
      ["stock", "left", "reserved", "presale", "held", "paid"].forEach(function (f) { s[f] += p[f]; });
    }
    for (var sku2 in sums) {
      var tr = rows[sku2], s2 = sums[sku2];
      if (!tr) { continue; }
      ["stock", "left", "reserved", "presale"].forEach(function (f) { setField(tr, f, s2[f]); });
      tr.querySelector("[data-split]").textContent = s2.held + " " + T.held + " · " + s2.paid + " " + T.paid;
      tr.classList.toggle("featured", state.featured === sku2);
      tr.classList.toggle("soldout", s2.left === 0);
    }
  }

  // A form stays open when its control got no answer, so that the host can tap again (same key, applied once).
  function closeIfAnswered(r) { if (!r.unreachable) { closeForms(); } }
  function closeForms() {
    var open = document.querySelectorAll("tr.form-row");
    for (var i = 0; i < open.length; i++) { open[i].remove(); }
  }

  function openForm(tr, kind, key) {
    closeForms();
    var row = el("tr", {"class": "form-row", "data-for": key});
    var td = el("td", {colspan: "6"});
    var form = el("form", {"class": "inline"});
    var id = "f-" + kind + "-" + key.replace(/[^A-Za-z0-9_-]/g, "_");
    var parts = key.split("/");
    var sku = parts[0], variant = parts.length > 1 ? parts.slice(1).join("/") : null;
    var labelText = kind === "restock" ? T.quantity : kind === "presale" ? T.cap : T.limit;
    form.appendChild(el("label", {"for": id}, labelText));
    var input = el("input", {id: id, type: "number", min: kind === "restock" ? "1" : "0", step: "1",
                             inputmode: "numeric", required: ""});
    form.appendChild(input);
    function value() { return parseInt(input.value, 10); }
    if (kind === "presale") {
      form.appendChild(button(T.open, function () {
        var body = {action: "presale", sku: sku, variant: variant, enabled: true};
        if (input.value !== "") { body.qty = value(); }
        control(body, form).then(closeIfAnswered);
      }));
      form.appendChild(button(T.close, function () {
        control({action: "presale", sku: sku, variant: variant, enabled: false}, form).then(closeIfAnswered);
      }));
    } else {
      form.appendChild(el("button", {type: "submit"}, T.apply));
    }
    form.appendChild(button(T.back, closeForms));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (input.value === "") { input.focus(); return; }
      var body = kind === "restock" ? {action: "restock", sku: sku, variant: variant, qty: value()}
                                    : {action: "limit", sku: sku, qty: value()};
      control(body, form).then(closeIfAnswered);
    });
    td.appendChild(form);
    row.appendChild(td);
    tr.parentNode.insertBefore(row, tr.nextSibling);
    input.focus();
  }

  // Controls in flight by what they ask (a second tap on the same thing while the first has no answer is
  // the same request), and the key of each one that got no answer (tapped again: sent with the same key).
  var inflight = {};
  var unanswered = {};
  function control(body, from) {
    var what = JSON.stringify(body);
    if (inflight[what]) { return inflight[what]; }
    var key = unanswered[what] || newKey();
    var buttons = from ? Array.prototype.slice.call(from.querySelectorAll ? from.querySelectorAll("button") : [])
                          .concat(from.tagName === "BUTTON" ? [from] : []) : [];
    buttons.forEach(function (b) { b.disabled = true; b.setAttribute("aria-busy", "true"); });
    document.body.classList.add("busy");
    var done = api("POST", "/console/api/control", body, key).then(function (r) {
      delete inflight[what];
      buttons.forEach(function (b) { b.disabled = false; b.removeAttribute("aria-busy"); });
      if (!Object.keys(inflight).length) { document.body.classList.remove("busy"); }
      if (r.unreachable) { unanswered[what] = key; toast(r.error, true); return r; }
      delete unanswered[what];
      if (r.ok) {
        toast(T.applied + ": " + actionText(body.action) + (body.sku ? " " + unitName(body.sku, body.variant) : "") +
              (body.enabled === true ? " " + T.open : body.enabled === false ? " " + T.close : "") +
              (body.qty !== undefined && body.qty !== null ? " " + body.qty : "") + (body.order ? " " + body.order : ""));
      }
      else { toast(T.refused + ": " + refusal(r), true); }
      return r;
    });
    inflight[what] = done;
    return done;
  }

  function renderTotals() {
    $("rate-comments").textContent = num(state.rates[0]);
    $("rate-orders").textContent = num(state.rates[1]);
    $("total-comments").textContent = num(state.comments);
    $("total-orders").textContent = num(state.orders);
    $("revenue-paid").textContent = money(state.revenue.paid);
    $("revenue-held").textContent = money(state.revenue.held);
    $("featured").textContent = state.featured ? productName(state.featured) : "-";
    $("paused-flag").hidden = !state.paused;
    $("pause").hidden = state.paused;
    $("resume").hidden = !state.paused;
    for (var key in rows) { if (key.indexOf("/") < 0) { rows[key].classList.toggle("featured", state.featured === key); } }
  }

  function renderAdapters() {
    var ul = $("adapters");
    ul.textContent = "";
    for (var name in state.adapters) {
      var a = state.adapters[name];
      var li = el("li", {"data-adapter": name});
      li.appendChild(el("b", {"class": a.connected ? "ok" : "down"}, name + " (" + a.type + ")"));
      li.appendChild(el("span", null, (a.connected ? T.connected : T.disconnected) + " · " + T.received + " " +
        num(a.received) + " · " + T.reconnects + " " + num(a.reconnects) + " · " + T.malformed + " " + num(a.malformed)));
      ul.appendChild(li);
    }
  }

  $("pause").addEventListener("click", function (ev) { control({action: "pause"}, ev.currentTarget); });
  $("resume").addEventListener("click", function (ev) { control({action: "resume"}, ev.currentTarget); });

  // ------------------------------------------------------------------ orders

  function statusText(s) { return T["st_" + s] || s; }

  function actionText(a) { return T["act_" + a] || a; }

  function unitName(sku, variant) { return productName(variant ? sku + "/" + variant : sku); }

  // What a refused control says, in the page's language where the daemon gave the case's code.
  function refusal(r) {
    var form = r.code && T["err_" + r.code];
    if (!form) { return r.error || ("HTTP " + r.httpStatus); }
    var d = r.detail || {};
    return form.replace(/\{(\w+)\}/g, function (_, k) {
      var v = d[k];
      if (v === undefined || v === null) { return ""; }
      if (k === "status") { return statusText(v); }
      if (k === "sku" || k === "key") { return productName(v); }
      return String(v);
    });
  }

  // When the rows move (a paid hold leaves "Unpaid holds", a row's buttons change), a second tap meant for
  // what was under the finger would land on another row's button or another button: the row buttons are
  // disabled for half a second after such a change.
  var shownRows = "", settledAt = 0;

  function ordersTable(list, queue) {
    var head = $("orders-head"), body = $("orders-body");
    var rows = list.map(function (o) { return o.order + ":" + o.status; }).join(",");
    if (rows !== shownRows) { shownRows = rows; settledAt = Date.now() + 500; }
    head.textContent = ""; body.textContent = "";
    var tr = el("tr");
    (queue ? [T.place, T.order, T.buyer, T.qty] : ["", T.order, T.buyer, T.product, T.qty, T.status, T.pay_by, ""])
      .forEach(function (h) { tr.appendChild(el("th", null, h)); });
    head.appendChild(tr);
    list.forEach(function (o) {
      var row = el("tr", {"data-order": o.order, "data-status": o.status});
      if (queue) {
        row.appendChild(el("td", {"data-field": "place"}, o.place));
      } else {
        var c = el("td");
        if (o.status === "reserved") {
          var box = el("input", {type: "checkbox", "aria-label": T.order + " " + o.order, value: o.order});
          box.addEventListener("change", selectionChanged);
          c.appendChild(box);
        }
        row.appendChild(c);
      }
      row.appendChild(el("td", {"class": "oid"}, o.order));
      var who = el("td");
      who.appendChild(button(o.name, function () { showBuyer(o.user, o.name, o.platform); }, "link"));
      if (o.name !== o.user) { who.appendChild(el("small", {"class": "sku"}, o.user)); }
      row.appendChild(who);
      if (!queue) { row.appendChild(el("td", null, unitName(o.sku, o.variant))); }
      row.appendChild(el("td", null, o.qty));
      if (!queue) {
        row.appendChild(el("td", {"class": "st-" + o.status}, statusText(o.status)));
        row.appendChild(el("td", null, o.pay_by ? clock(o.pay_by) : ""));
        var cell = el("td", {"class": "acts"});
        var acts = el("div");
        cell.appendChild(acts);
        if (o.status === "reserved") {
          acts.appendChild(button(T.pay, function (ev) { control({action: "pay", order: o.order}, ev.currentTarget).then(refreshOrders); }));
        } else if (o.status === "presale" || o.status === "paid") {
          // Where "Mark paid" was: a second tap on it after the list re-rendered must not land on Cancel.
          acts.appendChild(el("span", {"class": "slot", "aria-hidden": "true"}, T.pay));
        }
        if (o.status === "reserved" || o.status === "presale" || o.status === "paid") {
          acts.appendChild(confirmButton("cancel " + o.order, T.cancel, T.cancel_sure, function (b) { control({action: "cancel", order: o.order}, b).then(refreshOrders); }));
        }
        row.appendChild(cell);
      }
      body.appendChild(row);
    });
    // Until then (another render within the half second, of the same rows, gets its buttons disabled too).
    var settling = settledAt - Date.now();
    if (settling > 0) {
      var still = Array.prototype.slice.call(body.querySelectorAll(".acts button"));
      still.forEach(function (b) { b.disabled = true; });
      setTimeout(function () { still.forEach(function (b) { if (!b.hasAttribute("aria-busy")) { b.disabled = false; } }); }, settling);
    }
    selectionChanged();
  }

  function selectionChanged() {
    $("pay-selected").disabled = !document.querySelector("#orders-body input:checked");
  }

  var shownOrders = [];
  function refreshOrders(more, live) {
    if (ordersView.kind === "queue") { $("orders-more").hidden = true; return showQueue(ordersView.key); }
    var q = new URLSearchParams();
    if (ordersView.kind === "buyer") {
      q.set("user", ordersView.user);
      if (ordersView.platform) { q.set("platform", ordersView.platform); }
    }
    else if (live && ordersView.q !== undefined) { q.set("q", ordersView.q); q.set("status", ordersView.status); }
    else {
      ordersView.q = $("q").value.trim(); ordersView.status = $("status").value;
      q.set("q", ordersView.q); q.set("status", ordersView.status);
    }
    // "More" asks for the next page; a refresh asks again for as many as are shown (at least one page).
    if (more === true) { q.set("offset", String(shownOrders.length)); }
    else { q.set("limit", String(Math.min(1000, Math.max(200, shownOrders.length)))); }
    return api("GET", "/console/api/orders?" + q.toString()).then(function (r) {
      if (r.httpStatus === 401) { return showLogin(); }
      if (r.unreachable) { toast(r.error, true); return; }
      shownOrders = more === true ? shownOrders.concat(r.orders || []) : (r.orders || []);
      var title = ordersView.kind === "buyer" ? T.orders_of + ordersView.name : "";
      $("orders-title").textContent = title + " " + num(r.total) + " " + T.found +
        (r.total > shownOrders.length ? " · " + T.shown.replace("%d", num(shownOrders.length)).replace("%d", num(r.total)) : "");
      $("orders-more").hidden = !(r.total > shownOrders.length);
      var ticked = {};
      var boxes = document.querySelectorAll("#orders-body input:checked");
      for (var i = 0; i < boxes.length; i++) { ticked[boxes[i].value] = true; }
      ordersTable(shownOrders, false);
      var again = document.querySelectorAll("#orders-body input[type=checkbox]");
      for (var j = 0; j < again.length; j++) { if (ticked[again[j].value]) { again[j].checked = true; } }
      selectionChanged();
    });
  }
  $("orders-more").addEventListener("click", function () { refreshOrders(true); });
  $("logout").addEventListener("click", function () {
    api("POST", "/console/logout", {}).then(function () {
      if (source) { source.close(); source = null; }
      showLogin();
    });
  });

  function showBuyer(user, name, platform) {
    ordersView = {kind: "buyer", user: user, name: name, platform: platform};
    shownOrders = [];
    show("orders");
    refreshOrders();
  }

  function showQueue(key) {
    ordersView = {kind: "queue", key: key};
    $("orders-more").hidden = true;
    show("orders");
    return api("GET", "/console/api/queue?key=" + encodeURIComponent(key)).then(function (r) {
      $("orders-title").textContent = T.queue_of + productName(key) + " · " + num((r.queue || []).length);
      ordersTable(r.queue || [], true);
    });
  }

  $("search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    ordersView = {kind: "search"};  // refreshOrders keeps the query it sends (a live refresh sends it again)
    shownOrders = [];
    refreshOrders();
  });

  // The orders on screen follow the sale: new orders, payments, expiries and promotions show without a tap,
  // at most every LIVE_ORDERS ms, with the search that was submitted (not what is being typed) and the boxes
  // that were ticked still ticked.
  var LIVE_ORDERS = 2000, liveTimer = null, liveAt = 0, liveBusy = false;
  function ordersChanged() {
    if (current !== "orders" || liveTimer) { return; }
    liveTimer = setTimeout(function () {
      liveTimer = null;
      if (current !== "orders" || liveBusy) { return; }
      liveBusy = true;
      liveAt = Date.now();
      var done = function () { liveBusy = false; };
      refreshOrders(false, true).then(done, done);
    }, Math.max(0, LIVE_ORDERS - (Date.now() - liveAt)));
  }

  $("pay-selected").addEventListener("click", function () {
    var boxes = document.querySelectorAll("#orders-body input:checked");
    var ids = [];
    for (var i = 0; i < boxes.length; i++) { ids.push(boxes[i].value); }
    if (!ids.length) { return; }
    var b = $("pay-selected");
    b.disabled = true;
    api("POST", "/console/api/pay", {orders: ids}).then(function (r) {
      b.disabled = false;
      if (r.unreachable) { toast(r.error, true); return; }
      if (r.ok) { toast(T.applied + ": " + r.paid + " " + T.paid); }
      else { toast(T.refused + ": " + ((r.results || []).filter(function (x) { return !x.ok; })
        .map(refusal).join("; ") || refusal(r)), true); }
      refreshOrders();
    });
  });

  // ------------------------------------------------------------------ feed, charts, summary

  function feedText(f) {
    if (f.kind === "event") { return (T["ev_" + f.event] || f.event) + " · " + productName(f.key); }
    if (f.kind === "restart") { return T.restarted; }
    if (f.kind === "control") {
      return T.host + " · " + [actionText(f.action), f.sku ? unitName(f.sku, f.variant) : null,
                               f.enabled === true ? T.open : f.enabled === false ? T.close : null, f.qty, f.order]
        .filter(function (x) { return x !== undefined && x !== null; }).join(" ");
    }
    var what = f.sku ? unitName(f.sku, f.variant) : "";
    var why = f.reason ? " (" + (T["rs_" + f.reason] || f.reason) + ")" : f.position ? " #" + f.position : "";
    return (f.name || f.user) + " · " + statusText(f.status) + why + " · " + what + " ×" + f.qty + (f.order ? " · " + f.order : "");
  }

  function addFeed(items) {
    var list = $("feed-list");
    items.forEach(function (f) {
      var li = el("li", {"class": "k-" + f.kind + (f.status ? " st-" + f.status : "")});
      li.appendChild(el("time", null, clock(f.ts)));
      li.appendChild(el("span", null, feedText(f)));
      list.insertBefore(li, list.firstChild);
    });
    while (list.children.length > 60) { list.removeChild(list.lastChild); }
  }

  function renderCharts() {
    LivecartSummary.rates($("chart-rates"), state.history, [T.comments_s, T.orders_s]);
    var rowsData = Object.keys(state.products).map(function (k) {
      var p = state.products[k];
      return {name: productName(k), stock: p.stock, sold: p.reserved, paid: p.paid, presale: p.presale};
    });
    LivecartSummary.sellThrough($("chart-sell"), rowsData, [T.paid, T.held, T.left, T.presale]);
  }

  function renderSummary() {
    api("GET", "/console/api/summary").then(function (data) {
      if (data.httpStatus === 401) { return showLogin(); }
      data.language = lang;
      LivecartSummary.render($("summary"), data);
    });
  }

  function show(tab) {
    current = tab;
    var buttons = document.querySelectorAll("#tabs button");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].classList.toggle("on", buttons[i].getAttribute("data-tab") === tab);
    }
    ["board", "orders", "feed", "charts", "summary"].forEach(function (p) { $(p).hidden = p !== tab; });
    if (tab === "charts" && state) { renderCharts(); }
    if (tab === "summary") { renderSummary(); }
  }

  var tabButtons = document.querySelectorAll("#tabs button[data-tab]");
  for (var i = 0; i < tabButtons.length; i++) {
    tabButtons[i].addEventListener("click", function (ev) {
      var tab = ev.currentTarget.getAttribute("data-tab");
      if (tab === "orders") { ordersView = {kind: "search"}; shownOrders = []; show(tab); refreshOrders(); } else { show(tab); }
    });
  }

  setLanguage(lang || "zh");
  boot();
})();
