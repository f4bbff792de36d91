// Route velocity table for otel-velocity.
//
// Fetches the JSON table from the data endpoint (default "ops/velocity",
// relative to the page) on a timer and renders it. Every string from the
// JSON is written with textContent or as an attribute value, never parsed as
// HTML. Rows are kept by (service, key) and updated in place, so a refresh
// keeps the sort order and the scroll position.
(function () {
  'use strict';

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const DEFAULT_REFRESH_MS = 5000;
  const MIN_REFRESH_MS = 100;
  const DEFAULT_ERROR_THRESHOLD = 0.05;
  const DEFAULT_LIMIT = 100;
  const FETCH_TIMEOUT_MS = 10000;
  const TOKEN_STORAGE_KEY = 'otel-velocity.token';
  const EMPTY_VALUE = '—';
  const SPARK_WIDTH = 96;
  const SPARK_HEIGHT = 24;
  const SPARK_PADDING = 2;

  // Sortable row fields and the sort order of a first click on each.
  const FIRST_SORT_ORDER = {
    key: 'asc',
    rps: 'desc',
    p50_ms: 'desc',
    p95_ms: 'desc',
    p99_ms: 'desc',
    err_rate: 'desc',
    count: 'desc',
    regress_pct: 'desc',
  };
  const DEFAULT_SORT = { key: 'rps', order: 'desc' };

  const elements = {};
  const rowViews = new Map();
  const state = {
    config: null,
    token: null,
    data: null,
    service: '',
    sortKey: DEFAULT_SORT.key,
    sortOrder: DEFAULT_SORT.order,
    timer: null,
    inFlight: null,
    generation: 0,
  };

  // --- Configuration and address bar -------------------------------------

  function parseNumber(text, fallback) {
    if (text === null || text === undefined || String(text).trim() === '') {
      return fallback;
    }
    const value = Number(text);
    return Number.isFinite(value) ? value : fallback;
  }

  function readConfig() {
    const dataset = document.body.dataset;
    const query = new URLSearchParams(window.location.search);
    const refreshMs = parseNumber(query.get('refresh_ms') ?? dataset.refreshMs, DEFAULT_REFRESH_MS);
    const threshold = parseNumber(
      query.get('error_threshold') ?? dataset.errorThreshold,
      DEFAULT_ERROR_THRESHOLD,
    );
    const limit = parseNumber(dataset.limit, DEFAULT_LIMIT);
    return {
      refreshMs: Math.max(MIN_REFRESH_MS, Math.round(refreshMs)),
      errorThreshold: Math.min(1, Math.max(0, threshold)),
      limit: Math.max(1, Math.round(limit)),
      // Only the page's own markup sets the endpoint, never the address bar,
      // so a crafted link cannot send the bearer token elsewhere.
      endpoint: new URL(dataset.endpoint || 'ops/velocity', document.baseURI),
    };
  }

  function readStoredToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_STORAGE_KEY);
    } catch (error) {
      return null;
    }
  }

  function storeToken(token) {
    try {
      if (token) {
        window.sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
      } else {
        window.sessionStorage.removeItem(TOKEN_STORAGE_KEY);
      }
    } catch (error) {
      // Storage can be off. The token then lasts until the page reloads.
    }
  }

  // Take the bearer token from "#token=..." and remove it from the address
  // bar. A fragment never reaches server logs or the Referer header. The
  // token stays in sessionStorage for reloads in this tab.
  function takeToken() {
    const parts = window.location.hash.replace(/^#/, '').split('&');
    const index = parts.findIndex((part) => part.startsWith('token='));
    if (index === -1) {
      return readStoredToken();
    }

    // decodeURIComponent, unlike URLSearchParams, keeps a "+" in the token.
    const encoded = parts[index].slice('token='.length);
    let token = encoded;
    try {
      token = decodeURIComponent(encoded);
    } catch (error) {
      // An invalid percent escape: use the token as written.
    }
    parts.splice(index, 1);
    const rest = parts.filter((part) => part !== '').join('&');
    const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : '');
    window.history.replaceState(window.history.state, '', url);
    storeToken(token || null);
    return token || null;
  }

  function readViewFromAddress() {
    const query = new URLSearchParams(window.location.search);
    state.service = query.get('service') || '';
    const sortKey = query.get('sort');
    if (sortKey && Object.prototype.hasOwnProperty.call(FIRST_SORT_ORDER, sortKey)) {
      state.sortKey = sortKey;
      state.sortOrder = query.get('order') === 'asc' ? 'asc' : 'desc';
    }
  }

  // Keep the filter and sort in the address bar so a reload or a shared link
  // shows the same view.
  function writeViewToAddress() {
    const query = new URLSearchParams(window.location.search);
    setOrDelete(query, 'service', state.service);
    setOrDelete(query, 'sort', state.sortKey);
    setOrDelete(query, 'order', state.sortOrder);
    const search = query.toString();
    const url = window.location.pathname + (search ? `?${search}` : '') + window.location.hash;
    window.history.replaceState(window.history.state, '', url);
  }

  function setOrDelete(params, name, value) {
    if (value) {
      params.set(name, value);
    } else {
      params.delete(name);
    }
  }

  // --- Fetching -----------------------------------------------------------

  function buildDataUrl() {
    const url = new URL(state.config.endpoint);
    if (state.service) {
      url.searchParams.set('service', state.service);
    }
    url.searchParams.set('sort', state.sortKey);
    url.searchParams.set('order', state.sortOrder);
    url.searchParams.set('limit', String(state.config.limit));
    url.searchParams.set('offset', '0');
    return url;
  }

  // A hidden tab skips its refreshes. The visibilitychange handler fetches
  // again as soon as the tab shows.
  function scheduleRefresh(delayMs) {
    window.clearTimeout(state.timer);
    state.timer = window.setTimeout(() => {
      if (!document.hidden) {
        refresh();
      }
    }, delayMs);
  }

  async function refresh() {
    window.clearTimeout(state.timer);
    if (state.inFlight) {
      state.inFlight.abort();
    }

    const generation = ++state.generation;
    const controller = new AbortController();
    state.inFlight = controller;
    const timeout = window.setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    const url = buildDataUrl();
    const headers = { Accept: 'application/json' };
    if (state.token && url.origin === window.location.origin) {
      headers.Authorization = `Bearer ${state.token}`;
    }

    try {
      const response = await fetch(url, {
        headers,
        cache: 'no-store',
        credentials: 'same-origin',
        referrerPolicy: 'no-referrer',
        signal: controller.signal,
      });
      if (generation !== state.generation) {
        return;
      }
      if (response.status === 401 || response.status === 403) {
        showStatus(
          `Not authorized (HTTP ${response.status}): open this page as /velocity#token=YOUR_TOKEN.`,
          'error',
        );
        return;
      }
      if (!response.ok) {
        showStatus(`Update failed: HTTP ${response.status}. Retrying.`, 'error');
        return;
      }

      const data = await response.json();
      if (generation !== state.generation) {
        return;
      }
      state.data = data;
      render();
      showStatus(describeUpdate(data), 'ok');
    } catch (error) {
      if (generation !== state.generation) {
        return;
      }
      const reason = error && error.name === 'AbortError' ? 'timed out' : String(error && error.message);
      showStatus(`Update failed: ${reason}. Retrying.`, 'error');
    } finally {
      window.clearTimeout(timeout);
      if (generation === state.generation) {
        state.inFlight = null;
        scheduleRefresh(state.config.refreshMs);
      }
    }
  }

  function describeUpdate(data) {
    const parts = [];
    if (isNumber(data.generated_at_s)) {
      parts.push(`Updated ${new Date(data.generated_at_s * 1000).toLocaleTimeString()}`);
    }
    const rowCount = Array.isArray(data.rows) ? data.rows.length : 0;
    const total = isNumber(data.total) ? data.total : rowCount;
    const noun = total === 1 ? 'route' : 'routes';
    if (rowCount < total) {
      parts.push(`showing ${rowCount} of ${total} ${noun}`);
    } else {
      parts.push(`${total} ${noun}`);
    }
    parts.push(`refresh every ${formatSeconds(state.config.refreshMs / 1000)}`);
    return parts.join(' · ');
  }

  function showStatus(text, kind) {
    elements.status.textContent = text;
    elements.status.dataset.kind = kind;
  }

  // --- Formatting -----------------------------------------------------------

  function isNumber(value) {
    return typeof value === 'number' && Number.isFinite(value);
  }

  function formatFixed(value, digits) {
    return value.toLocaleString('en-US', {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    });
  }

  function formatRps(value) {
    if (!isNumber(value)) {
      return EMPTY_VALUE;
    }
    if (value === 0) {
      return '0';
    }
    if (value < 10) {
      return formatFixed(value, 2);
    }
    return formatFixed(value, value < 100 ? 1 : 0);
  }

  function formatMs(value) {
    if (!isNumber(value)) {
      return EMPTY_VALUE;
    }
    if (value >= 1000) {
      return `${formatFixed(value / 1000, 2)} s`;
    }
    let digits = 0;
    if (value < 10) {
      digits = 2;
    } else if (value < 100) {
      digits = 1;
    }
    return `${formatFixed(value, digits)} ms`;
  }

  function formatPercent(fraction) {
    if (!isNumber(fraction)) {
      return EMPTY_VALUE;
    }
    const percent = fraction * 100;
    if (percent > 0 && percent < 0.1) {
      return '<0.1%';
    }
    return `${formatFixed(percent, 1)}%`;
  }

  function formatRegress(percent) {
    if (!isNumber(percent)) {
      return EMPTY_VALUE;
    }
    const sign = percent > 0 ? '+' : '';
    return `${sign}${formatFixed(percent, 1)}%`;
  }

  function formatCount(value) {
    return isNumber(value) ? formatFixed(value, 0) : EMPTY_VALUE;
  }

  function formatSeconds(seconds) {
    return `${formatFixed(seconds, seconds < 10 && !Number.isInteger(seconds) ? 1 : 0)} s`;
  }

  // --- Sorting ---------------------------------------------------------------

  function compareRows(left, right) {
    const direction = state.sortOrder === 'asc' ? 1 : -1;
    if (state.sortKey === 'key') {
      const byKey = String(left.key).localeCompare(String(right.key));
      if (byKey !== 0) {
        return direction * byKey;
      }
    } else {
      const leftValue = left[state.sortKey];
      const rightValue = right[state.sortKey];
      // Rows without a value go last in both orders.
      if (!isNumber(leftValue) || !isNumber(rightValue)) {
        if (isNumber(leftValue) !== isNumber(rightValue)) {
          return isNumber(leftValue) ? -1 : 1;
        }
      } else if (leftValue !== rightValue) {
        return direction * (leftValue - rightValue);
      }
    }
    // Ties keep a stable order: by route key, then by service.
    return (
      String(left.key).localeCompare(String(right.key)) ||
      String(left.service).localeCompare(String(right.service))
    );
  }

  function onSortClick(sortKey) {
    if (state.sortKey === sortKey) {
      state.sortOrder = state.sortOrder === 'asc' ? 'desc' : 'asc';
    } else {
      state.sortKey = sortKey;
      state.sortOrder = FIRST_SORT_ORDER[sortKey];
    }
    writeViewToAddress();
    if (state.data) {
      render();
      // With more rows than one page, the server picks the top rows by the
      // sort key, so fetch again.
      const rowCount = Array.isArray(state.data.rows) ? state.data.rows.length : 0;
      if (isNumber(state.data.total) && state.data.total > rowCount) {
        refresh();
      }
    } else {
      renderSortIndicators();
    }
  }

  function renderSortIndicators() {
    for (const header of elements.sortHeaders) {
      const sortKey = header.dataset.sort;
      if (sortKey === state.sortKey) {
        header.setAttribute('aria-sort', state.sortOrder === 'asc' ? 'ascending' : 'descending');
      } else {
        header.removeAttribute('aria-sort');
      }
    }
  }

  // --- Rendering ---------------------------------------------------------------

  function render() {
    const data = state.data;
    const rows = Array.isArray(data.rows) ? data.rows.slice() : [];
    rows.sort(compareRows);

    renderSentryNote(data.sentry);
    renderOverflowNote(data.overflow);
    renderServices(Array.isArray(data.services) ? data.services : []);
    if (isNumber(data.window_s)) {
      elements.windowLength.textContent = formatSeconds(data.window_s);
    }
    renderRows(rows);
    renderEmptyState(rows);
    renderSortIndicators();
  }

  function renderSentryNote(sentry) {
    const disabled = sentry && sentry.enabled === false;
    elements.sentryNote.hidden = !disabled;
    if (disabled) {
      const reason = sentry.reason ? `: ${sentry.reason}` : '.';
      elements.sentryNote.textContent = `Sentry links are off${reason}`;
    }
  }

  function renderOverflowNote(overflow) {
    const routes = overflow && isNumber(overflow.routes) ? overflow.routes : 0;
    elements.overflowNote.hidden = routes === 0;
    if (routes > 0) {
      const spans = isNumber(overflow.spans) ? formatCount(overflow.spans) : 'their';
      elements.overflowNote.textContent =
        `${formatCount(routes)} routes past the route limit (${spans} spans) ` +
        'are counted in the (overflow) row.';
    }
  }

  // Replace the service options only when the list changes, so an open
  // select stays open. The selected service stays listed even with no rows.
  function renderServices(services) {
    const names = services.filter((name) => typeof name === 'string' && name !== '');
    if (state.service && !names.includes(state.service)) {
      names.push(state.service);
    }

    const select = elements.serviceFilter;
    const expectedValues = ['', ...names];
    const currentValues = Array.from(select.options, (option) => option.value);
    if (expectedValues.join('\u0000') !== currentValues.join('\u0000')) {
      while (select.options.length > 1) {
        select.remove(1);
      }
      for (const name of names) {
        const option = document.createElement('option');
        option.value = name;
        option.textContent = name;
        select.append(option);
      }
    }
    select.value = state.service;
  }

  function renderEmptyState(rows) {
    const noRows = rows.length === 0;
    const filtered = noRows && state.service !== '';
    elements.emptyState.hidden = !noRows || filtered;
    elements.filteredEmpty.hidden = !filtered;
    elements.table.hidden = noRows;
    if (filtered) {
      elements.filteredEmpty.textContent =
        `No routes for service "${state.service}" in the current window.`;
    }
  }

  function renderRows(rows) {
    const tbody = elements.rows;
    const seen = new Set();
    let previous = null;

    for (const row of rows) {
      const id = `${row.service}\u0000${row.key}`;
      if (seen.has(id)) {
        continue;
      }
      seen.add(id);

      let view = rowViews.get(id);
      if (!view) {
        view = createRowView();
        rowViews.set(id, view);
      }
      updateRowView(view, row);

      // Move the row only when it is out of place, so unchanged rows stay
      // put in the DOM.
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== view.tr) {
        tbody.insertBefore(view.tr, expected);
      }
      previous = view.tr;
    }

    for (const [id, view] of rowViews) {
      if (!seen.has(id)) {
        view.tr.remove();
        rowViews.delete(id);
      }
    }
  }

  function createCell(className) {
    const cell = document.createElement('td');
    cell.className = className;
    return cell;
  }

  function createRowView() {
    const tr = document.createElement('tr');
    const view = { tr, signatures: {} };

    view.routeCell = createCell('col-route');
    view.method = document.createElement('span');
    view.method.className = 'method';
    view.route = document.createElement('span');
    view.route.className = 'route-template';
    view.service = document.createElement('span');
    view.service.className = 'service-name';
    view.routeCell.append(view.method, view.route, view.service);

    view.rps = createCell('num col-rps');
    view.p50 = createCell('num col-p50');
    view.p95 = createCell('num col-p95');
    view.p99 = createCell('num col-p99');
    view.errors = createCell('num col-errors');
    view.count = createCell('num col-count');
    view.p95Spark = createCell('spark-col col-p95-spark');
    view.rpsSpark = createCell('spark-col col-rps-spark');
    view.regress = createCell('num col-regress');
    view.sentry = createCell('col-sentry');

    tr.append(
      view.routeCell,
      view.rps,
      view.p50,
      view.p95,
      view.p99,
      view.errors,
      view.count,
      view.p95Spark,
      view.rpsSpark,
      view.regress,
      view.sentry,
    );
    return view;
  }

  function setText(element, text) {
    if (element.textContent !== text) {
      element.textContent = text;
    }
  }

  function setTitle(element, text) {
    if (text) {
      element.title = text;
    } else {
      element.removeAttribute('title');
    }
  }

  function updateRowView(view, row) {
    const errorRate = row.err_rate;
    const highErrors = isNumber(errorRate) && errorRate > state.config.errorThreshold;
    const regressing = row.is_regress === true;
    view.tr.classList.toggle('row-bad', highErrors || regressing);
    view.tr.classList.toggle('row-errors', highErrors);
    view.tr.classList.toggle('row-regress', regressing);
    view.tr.dataset.service = String(row.service);
    view.tr.dataset.key = String(row.key);

    setText(view.method, String(row.method));
    view.method.dataset.method = String(row.method);
    setText(view.route, String(row.route));
    setText(view.service, String(row.service));

    setText(view.rps, formatRps(row.rps));
    setTitle(view.rps, isNumber(row.rps_5m) ? `5 min: ${formatRps(row.rps_5m)} req/s` : '');
    setText(view.p50, formatMs(row.p50_ms));
    setText(view.p95, formatMs(row.p95_ms));
    setTitle(view.p95, isNumber(row.p95_5m_ms) ? `5 min: ${formatMs(row.p95_5m_ms)}` : '');
    setText(view.p99, formatMs(row.p99_ms));

    setText(view.errors, formatPercent(errorRate));
    const errorParts = [];
    if (isNumber(row.errors) && isNumber(row.count)) {
      errorParts.push(`${formatCount(row.errors)} errors of ${formatCount(row.count)}`);
    }
    if (isNumber(row.err_rate_5m)) {
      errorParts.push(`5 min: ${formatPercent(row.err_rate_5m)}`);
    }
    setTitle(view.errors, errorParts.join(' · '));

    setText(view.count, formatCount(row.count));
    setTitle(view.count, isNumber(row.count_5m) ? `5 min: ${formatCount(row.count_5m)}` : '');

    setText(view.regress, formatRegress(row.regress_pct));
    setTitle(
      view.regress,
      isNumber(row.baseline_p95_ms) ? `baseline p95: ${formatMs(row.baseline_p95_ms)}` : '',
    );

    const trend = Array.isArray(row.trend) ? row.trend : [];
    updateSparkline(view, 'p95Spark', trend, 'p95_ms', {
      label: 'p95',
      zeroBased: false,
      format: formatMs,
    });
    updateSparkline(view, 'rpsSpark', trend, 'rps', {
      label: 'RPS',
      zeroBased: true,
      format: formatRps,
    });
    updateSentryCell(view, row);
  }

  // --- Sparklines --------------------------------------------------------------

  function updateSparkline(view, cellName, trend, field, options) {
    const points = trend
      .filter((point) => point && isNumber(point.time_s))
      .map((point) => [point.time_s, isNumber(point[field]) ? point[field] : null]);
    const signature = JSON.stringify(points);
    if (view.signatures[cellName] === signature) {
      return;
    }
    view.signatures[cellName] = signature;
    view[cellName].replaceChildren(buildSparkline(points, options));
  }

  function svgElement(name, attributes) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [attribute, value] of Object.entries(attributes)) {
      element.setAttribute(attribute, String(value));
    }
    return element;
  }

  // Build an inline SVG line chart. A missing value breaks the line.
  function buildSparkline(points, options) {
    const values = points.map((point) => point[1]).filter((value) => value !== null);
    if (values.length === 0) {
      const empty = document.createElement('span');
      empty.className = 'spark-empty';
      empty.textContent = EMPTY_VALUE;
      return empty;
    }

    const svg = svgElement('svg', {
      class: 'sparkline',
      width: SPARK_WIDTH,
      height: SPARK_HEIGHT,
      viewBox: `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`,
      role: 'img',
    });
    const low = options.zeroBased ? 0 : Math.min(...values);
    const high = Math.max(...values);
    const description =
      `${options.label} over 5 min: ${options.format(Math.min(...values))} to ` +
      `${options.format(high)}`;
    svg.setAttribute('aria-label', description);
    const title = svgElement('title', {});
    title.textContent = description;
    svg.append(title);

    const firstTime = points[0][0];
    const lastTime = points[points.length - 1][0];
    const innerWidth = SPARK_WIDTH - 2 * SPARK_PADDING;
    const innerHeight = SPARK_HEIGHT - 2 * SPARK_PADDING;
    const toX = (time) =>
      lastTime > firstTime
        ? SPARK_PADDING + ((time - firstTime) / (lastTime - firstTime)) * innerWidth
        : SPARK_WIDTH / 2;
    const toY = (value) =>
      high > low
        ? SPARK_PADDING + (1 - (value - low) / (high - low)) * innerHeight
        : SPARK_HEIGHT / 2;

    let segment = [];
    const segments = [segment];
    for (const [time, value] of points) {
      if (value === null) {
        segment = [];
        segments.push(segment);
      } else {
        segment.push(`${toX(time).toFixed(1)},${toY(value).toFixed(1)}`);
      }
    }
    for (const coordinates of segments) {
      if (coordinates.length > 1) {
        svg.append(svgElement('polyline', { points: coordinates.join(' ') }));
      }
    }

    const last = points.filter((point) => point[1] !== null).pop();
    svg.append(svgElement('circle', { cx: toX(last[0]).toFixed(1), cy: toY(last[1]).toFixed(1), r: 1.8 }));
    return svg;
  }

  // --- Sentry cell ----------------------------------------------------------------

  // Return the URL if it is an absolute http(s) URL, else null, so a bad
  // value in the JSON can never become a javascript: link.
  function safeHttpUrl(value) {
    if (typeof value !== 'string' || value === '') {
      return null;
    }
    try {
      const url = new URL(value);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  function externalLink(href, text, className) {
    const link = document.createElement('a');
    link.href = href;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    link.className = className;
    link.textContent = text;
    return link;
  }

  function updateSentryCell(view, row) {
    const links = row.links && typeof row.links === 'object' ? row.links : {};
    const errorsUrl = safeHttpUrl(links.errors);
    const tracesUrl = safeHttpUrl(links.traces);
    const exemplars = shownExemplars(
      (Array.isArray(row.exemplars) ? row.exemplars : []).filter(
        (exemplar) => exemplar && typeof exemplar.trace_id === 'string' && exemplar.trace_id !== '',
      ),
    );
    const signature = JSON.stringify([errorsUrl, tracesUrl, exemplars]);
    if (view.signatures.sentry === signature) {
      return;
    }
    view.signatures.sentry = signature;

    const content = [];
    if (errorsUrl || tracesUrl) {
      const actions = document.createElement('div');
      actions.className = 'sentry-actions';
      if (errorsUrl) {
        const button = externalLink(errorsUrl, 'Sentry →', 'sentry-button');
        button.title = `Errors for ${row.key} in Sentry`;
        actions.append(button);
      }
      if (tracesUrl) {
        const traces = externalLink(tracesUrl, 'traces', 'traces-link');
        traces.title = `Traces for ${row.key} in Sentry`;
        actions.append(traces);
      }
      content.push(actions);
    }

    if (exemplars.length > 0) {
      const list = document.createElement('ul');
      list.className = 'exemplars';
      for (const exemplar of exemplars) {
        list.append(buildExemplar(exemplar));
      }
      content.push(list);
    }

    if (content.length === 0) {
      const none = document.createElement('span');
      none.className = 'muted';
      none.textContent = EMPTY_VALUE;
      content.push(none);
    }
    view.sentry.replaceChildren(...content);
  }

  // A row shows the newest error trace and the slowest traces, three at most, so rows stay short.
  const MAX_EXEMPLARS_SHOWN = 3;

  function shownExemplars(exemplars) {
    const errors = exemplars.filter((exemplar) => exemplar.kind === 'error').slice(0, 1);
    const shownSpans = new Set(errors.map((exemplar) => exemplar.span_id));
    // A slow error span is listed under both kinds; show it once.
    const others = exemplars.filter(
      (exemplar) => exemplar.kind !== 'error' && !shownSpans.has(exemplar.span_id),
    );
    return [...errors, ...others].slice(0, MAX_EXEMPLARS_SHOWN);
  }

  function buildExemplar(exemplar) {
    const item = document.createElement('li');
    const shortId = exemplar.trace_id.slice(0, 8);
    const traceUrl = safeHttpUrl(exemplar.trace_url);
    let idElement;
    if (traceUrl) {
      idElement = externalLink(traceUrl, shortId, 'trace-link');
    } else {
      idElement = document.createElement('code');
      idElement.className = 'trace-id';
      idElement.textContent = shortId;
    }
    idElement.dataset.traceId = exemplar.trace_id;

    const details = [];
    if (isNumber(exemplar.duration_ms)) {
      details.push(formatMs(exemplar.duration_ms));
    }
    if (isNumber(exemplar.status_code)) {
      details.push(String(exemplar.status_code));
    }
    const kind = typeof exemplar.kind === 'string' ? exemplar.kind : '';
    idElement.title = [`trace ${exemplar.trace_id}`, kind, ...details].filter(Boolean).join(' · ');

    const meta = document.createElement('span');
    meta.className = 'exemplar-meta';
    meta.textContent = details.join(' · ');
    if (kind) {
      item.dataset.kind = kind;
    }
    item.append(idElement, meta);
    return item;
  }

  // --- Start -----------------------------------------------------------------------

  function start() {
    elements.status = document.getElementById('status');
    elements.serviceFilter = document.getElementById('service-filter');
    elements.sentryNote = document.getElementById('sentry-note');
    elements.overflowNote = document.getElementById('overflow-note');
    elements.emptyState = document.getElementById('empty-state');
    elements.filteredEmpty = document.getElementById('filtered-empty');
    elements.table = document.getElementById('velocity-table');
    elements.rows = document.getElementById('velocity-rows');
    elements.windowLength = document.getElementById('window-length');
    elements.sortHeaders = Array.from(document.querySelectorAll('th[data-sort]'));

    state.config = readConfig();
    state.token = takeToken();
    readViewFromAddress();

    document.getElementById('error-threshold').textContent = formatPercent(
      state.config.errorThreshold,
    );
    // OTLP exporters add /v1/traces to this base URL.
    document.getElementById('otlp-endpoint').textContent = new URL('.', document.baseURI).href.replace(
      /\/$/,
      '',
    );

    for (const header of elements.sortHeaders) {
      header.querySelector('button').addEventListener('click', () => onSortClick(header.dataset.sort));
    }
    elements.serviceFilter.addEventListener('change', () => {
      state.service = elements.serviceFilter.value;
      writeViewToAddress();
      refresh();
    });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        refresh();
      }
    });

    renderServices([]);
    renderSortIndicators();
    refresh();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
