// The after-sale summary and the charts, drawn as inline SVG. Used by the console page and, inlined, by
// `livecart report --html FILE` (one self-contained file). No dependencies.
"use strict";
var LivecartSummary = (function () {
  var SVG = "http://www.w3.org/2000/svg";
  var TEXT = {
    zh: {title: "销售汇总", comments: "评论", orders: "订单", paid: "已付", held: "待付", presale: "预售",
         sold: "已售", left: "剩余", stock: "库存", product: "商品", revenue: "收入", revenue_paid: "已付收入",
         revenue_held: "待付收入", timeline: "时间线", events: "事件", rates: "每秒评论 / 订单",
         sell: "售罄进度", none: "无", ev_sold_out: "售罄", ev_low_stock: "库存紧张", ev_presale_opened: "开始预售",
         ev_presale_full: "预售满",
         since: "时间线和事件从 %s（直播助手重启）算起；整场的汇总：livecart report 配置文件 --html 汇总.html"},
    en: {title: "Sale summary", comments: "Comments", orders: "Orders", paid: "Paid", held: "Held",
         presale: "Presale", sold: "Sold", left: "Left", stock: "Stock", product: "Product", revenue: "Revenue",
         revenue_paid: "Revenue paid", revenue_held: "Revenue held", timeline: "Timeline", events: "Events",
         rates: "Comments / orders per second", sell: "Sell-through", none: "none", ev_sold_out: "sold out",
         ev_low_stock: "low stock", ev_presale_opened: "presale opened", ev_presale_full: "presale full",
         since: "Timeline and events since %s (livecart restarted); the whole sale: livecart report FILE --html OUT.html"}
  };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { for (var k in attrs) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    return e;
  }
  function num(n) { return Number(n || 0).toLocaleString(); }
  function money(n) { return Number(n || 0).toLocaleString(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2}); }
  function clock(t) {
    var d = new Date(t * 1000);
    return ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2) + ":" + ("0" + d.getSeconds()).slice(-2);
  }

  // history: [[t, comments/s, orders/s], ...] -> an SVG with two lines and a time axis.
  function rates(container, history, labels) {
    container.textContent = "";
    var w = 640, h = 200, pad = 34;
    var s = svg("svg", {viewBox: "0 0 " + w + " " + h, role: "img", "aria-label": labels.join(" / "), "class": "rates"});
    var n = history.length;
    var max = 1;
    for (var i = 0; i < n; i++) { max = Math.max(max, history[i][1], history[i][2]); }
    s.appendChild(svg("line", {x1: pad, y1: h - pad, x2: w - 4, y2: h - pad, "class": "axis"}));
    s.appendChild(svg("line", {x1: pad, y1: 4, x2: pad, y2: h - pad, "class": "axis"}));
    var top = svg("text", {x: 2, y: 14, "class": "tick"}); top.textContent = num(Math.round(max)); s.appendChild(top);
    if (n > 0) {
      var t0 = history[0][0], t1 = history[n - 1][0], span = Math.max(1, t1 - t0);
      [1, 2].forEach(function (col) {
        var pts = history.map(function (p) {
          var x = pad + (p[0] - t0) / span * (w - pad - 6);
          var y = h - pad - p[col] / max * (h - pad - 8);
          return x.toFixed(1) + "," + y.toFixed(1);
        });
        if (pts.length === 1) { pts.push(pts[0]); }
        s.appendChild(svg("polyline", {points: pts.join(" "), "class": col === 1 ? "line-comments" : "line-orders"}));
      });
      var a = svg("text", {x: pad, y: h - 10, "class": "tick"}); a.textContent = clock(t0); s.appendChild(a);
      var b = svg("text", {x: w - 60, y: h - 10, "class": "tick"}); b.textContent = clock(t1); s.appendChild(b);
    }
    container.appendChild(s);
    var legend = el("p", {"class": "legend"});
    legend.appendChild(el("span", {"class": "key-comments"}, labels[0]));
    legend.appendChild(el("span", {"class": "key-orders"}, labels[1]));
    container.appendChild(legend);
  }

  // rows: [{name, stock, sold, paid, presale}] -> horizontal bars: paid, held, rest of stock; presale after.
  // labels: what the bar's parts are, [paid, held, left, presale], said in a legend under the chart.
  function sellThrough(container, rows, labels) {
    container.textContent = "";
    var w = 640, line = 34, h = Math.max(1, rows.length) * line + 6;
    var s = svg("svg", {viewBox: "0 0 " + w + " " + h, role: "img", "class": "sell"});
    var label = 190, width = w - label - 70;
    rows.forEach(function (r, i) {
      var y = 4 + i * line;
      var total = Math.max(1, r.stock + r.presale);
      var t = svg("text", {x: 0, y: y + 18, "class": "tick"}); t.textContent = r.name; s.appendChild(t);
      var x = label;
      [["paid", r.paid], ["held", r.sold - r.paid], ["left", r.stock - r.sold], ["presale", r.presale]].forEach(function (part) {
        var pw = Math.max(0, part[1]) / total * width;
        if (pw > 0) { s.appendChild(svg("rect", {x: x.toFixed(1), y: y + 4, width: pw.toFixed(1), height: 20, "class": "bar-" + part[0]})); }
        x += pw;
      });
      var pct = svg("text", {x: label + width + 6, y: y + 18, "class": "tick"});
      pct.textContent = Math.round(100 * r.sold / Math.max(1, r.stock)) + "%";
      s.appendChild(pct);
    });
    container.appendChild(s);
    if (labels) {
      var legend = el("p", {"class": "legend"});
      ["paid", "held", "left", "presale"].forEach(function (k, i) {
        legend.appendChild(el("span", {"class": "key-" + k}, labels[i]));
      });
      container.appendChild(legend);
    }
  }

  function render(root, data) {
    var T = TEXT[data.language === "en" ? "en" : "zh"];
    root.textContent = "";
    root.appendChild(el("h1", null, T.title + " · " + data.stream));
    var cards = el("div", {"class": "cards"});
    [[T.comments, num(data.comments)], [T.orders, num(data.orders)], [T.revenue_paid, money(data.revenue.paid)],
     [T.revenue_held, money(data.revenue.held)]].forEach(function (c) {
      var d = el("div", {"class": "card"}); d.appendChild(el("span", null, c[0])); d.appendChild(el("b", null, c[1]));
      cards.appendChild(d);
    });
    root.appendChild(cards);
    var table = el("table", {"class": "summary-table"});
    var head = el("tr");
    // Revenue paid and revenue still held (unpaid holds, which may expire) apart: one sum of both read as
    // money taken.
    var labels = [T.product, T.stock, T.sold, T.paid, T.presale, T.left, T.revenue_paid, T.revenue_held];
    labels.forEach(function (x) { head.appendChild(el("th", null, x)); });
    var thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
    var body = el("tbody");
    data.products.forEach(function (p) {
      var tr = el("tr", {"data-summary": p.key});
      // data-label: on a phone each row is a card and each figure says what it is (app.css).
      [p.name, num(p.stock), num(p.sold), num(p.paid), num(p.presale), num(p.left), money(p.revenue_paid),
       money(p.revenue_held)]
        .forEach(function (x, i) { tr.appendChild(el("td", {"data-label": labels[i]}, x)); });
      body.appendChild(tr);
    });
    table.appendChild(body);
    root.appendChild(table);
    root.appendChild(el("h2", null, T.sell));
    var sell = el("div", {"class": "chart"}); root.appendChild(sell);
    sellThrough(sell, data.products, [T.paid, T.held, T.left, T.presale]);
    root.appendChild(el("h2", null, T.timeline + " · " + T.rates));
    var chart = el("div", {"class": "chart"}); root.appendChild(chart);
    rates(chart, data.history, [T.comments, T.orders]);
    root.appendChild(el("h2", null, T.events));
    var list = el("ol", {"class": "feed"});
    if (!data.events.length) { list.appendChild(el("li", null, T.none)); }
    data.events.forEach(function (e) {
      list.appendChild(el("li", null, clock(e.ts) + "  " + (T["ev_" + e.event] || e.event) + "  " + (e.name || e.key)));
    });
    if (data.since) {  // the daemon restarted: its timeline and events begin there
      root.appendChild(el("p", {"class": "note"}, T.since.replace("%s", clock(data.since))));
    }
    root.appendChild(list);
  }

  return {render: render, rates: rates, sellThrough: sellThrough, clock: clock, num: num, money: money};
})();
