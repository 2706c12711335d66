// Live Events: renders the gateway's /live/stream (server-sent WatchDeliveries records).
// Every value goes in through textContent, never as HTML: event data comes from browsers.
(function () {
  'use strict';
  const list = document.querySelector('#deliveries');
  const status = document.querySelector('#status');
  const template = document.querySelector('#delivery-template');
  const MAX_SHOWN = 200;
  const seen = new Set();

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function pretty(value) {
    return JSON.stringify(value === undefined ? {} : value, null, 2);
  }

  function vendorView(vendor) {
    if (!vendor) return 'No request was made to Amperity.';
    const lines = [
      `${vendor.method || ''} ${vendor.url || ''}`,
      `status: ${vendor.status_code || 0}`,
      `attempts: ${vendor.attempts || 0}`,
      `duration: ${vendor.duration || '0s'}`,
      '',
      'headers:',
    ];
    for (const [name, value] of Object.entries(vendor.headers || {}).sort()) {
      lines.push(`  ${name}: ${value}`);
    }
    return lines.join('\n');
  }

  function select(item, tab) {
    for (const button of item.querySelectorAll('[data-tab]')) {
      button.setAttribute('aria-selected', String(button.dataset.tab === tab));
    }
    for (const panel of item.querySelectorAll('[data-panel]')) {
      panel.hidden = panel.dataset.panel !== tab;
    }
  }

  function render(record) {
    const item = template.content.firstElementChild.cloneNode(true);
    const event = record.event || {};
    const vendor = record.vendor_request;
    item.dataset.messageId = record.message_id || '';
    item.dataset.outcome = record.outcome || '';
    const outcome = item.querySelector('.outcome');
    outcome.dataset.outcome = record.outcome || '';
    outcome.textContent = record.outcome || 'unknown';
    item.querySelector('.event-name').textContent = event.event || event.type || '(no name)';
    item.querySelector('.amperity-type').textContent = `→ ${record.amperity_type || '?'}`;
    item.querySelector('.vendor-status').textContent = vendor ? `HTTP ${vendor.status_code}` : '';
    item.querySelector('.integration').textContent = record.integration_id || '';
    item.querySelector('.message-id').textContent = record.message_id || '';
    const time = item.querySelector('time');
    time.dateTime = record.delivered_at || '';
    time.textContent = record.delivered_at || '';
    item.querySelector('[data-panel=event]').textContent = pretty(event);
    const payload = record.error ? { error: record.error, payload: record.payload } : record.payload;
    item.querySelector('[data-panel=payload]').textContent = pretty(payload);
    item.querySelector('[data-panel=vendor]').textContent = vendorView(vendor);
    for (const button of item.querySelectorAll('[data-tab]')) {
      button.addEventListener('click', () => select(item, button.dataset.tab));
    }
    return item;
  }

  // The service could not keep up with this page: say so where the records are missing.
  function gap(count) {
    const item = document.createElement('li');
    item.className = 'gap';
    item.textContent = `${count} ${count === 1 ? 'delivery' : 'deliveries'} not shown: ` +
      'this page read more slowly than events were delivered. Filter by ?integration= ' +
      'or reload to replay recent ones.';
    return item;
  }

  const query = new URLSearchParams(location.search);
  const streamQuery = new URLSearchParams();
  for (const name of ['integration', 'replay']) {
    if (query.get(name)) streamQuery.set(name, query.get(name));
  }
  const source = new EventSource(`/live/stream${streamQuery.size ? `?${streamQuery}` : ''}`);
  source.addEventListener('open', () => setStatus('live', 'live'));
  source.addEventListener('delivery', (message) => {
    const record = JSON.parse(message.data);
    const key = `${record.integration_id}/${record.message_id}/${record.delivered_at}`;
    if (seen.has(key)) return; // a reconnect replays recent records
    seen.add(key);
    document.querySelector('#empty').hidden = true;
    if (record.missed_before > 0) list.prepend(gap(record.missed_before));
    list.prepend(render(record));
    while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
  });
  source.addEventListener('failure', (message) => {
    const error = JSON.parse(message.data);
    setStatus('error', `stream failed: ${error.message}`);
  });
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      setStatus('closed', 'disconnected: reload the page (with ?token= if the session expired)');
    } else {
      setStatus('connecting', 'reconnecting…');
    }
  });
})();
