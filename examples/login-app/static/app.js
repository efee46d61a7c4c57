// The baton login app's page. The access token lives only in this closure: never in
// localStorage, sessionStorage or a readable cookie. The refresh token is an HttpOnly cookie
// the browser sends to /auth only.
(() => {
  'use strict';

  let accessToken = null;
  // 'DPoP' when the token is bound to this browser's key, 'Bearer' otherwise.
  let tokenType = 'Bearer';
  let refreshing = null;
  let checks = 0;
  const $ = (id) => document.getElementById(id);

  function status(message, isError) {
    $('status').textContent = message || '';
    $('status').className = isError ? 'error' : '';
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // DPoP (RFC 9449): a P-256 key pair made here, its private half not extractable, kept in
  // IndexedDB so a reload keeps it and every tab shares it. Every token request and API call
  // carries a fresh proof signed with it, so a stolen token or refresh cookie is useless
  // elsewhere. Without WebCrypto or IndexedDB the page falls back to plain bearer tokens.
  const b64u = (bytes) =>
    btoa(String.fromCharCode(...new Uint8Array(bytes)))
      .replace(/\+/g, '-')
      .replace(/\//g, '_')
      .replace(/=+$/, '');
  const utf8 = (text) => new TextEncoder().encode(text);
  const dpopKey = (() => {
    let loading = null;
    const request = (r) =>
      new Promise((resolve, reject) => {
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
    async function load() {
      const open = indexedDB.open('baton-dpop', 1);
      open.onupgradeneeded = () => open.result.createObjectStore('keys');
      const db = await request(open);
      let pair = await request(db.transaction('keys').objectStore('keys').get('pair'));
      if (!pair) {
        const made = await crypto.subtle.generateKey(
          { name: 'ECDSA', namedCurve: 'P-256' },
          false,
          ['sign', 'verify'],
        );
        // `add` fails when another tab stored its key first: then that one is everyone's.
        try {
          await request(db.transaction('keys', 'readwrite').objectStore('keys').add(made, 'pair'));
        } catch {
          // another tab won
        }
        pair = await request(db.transaction('keys').objectStore('keys').get('pair'));
      }
      const jwk = await crypto.subtle.exportKey('jwk', pair.publicKey);
      return { pair, jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } };
    }
    return () => {
      if (!window.crypto || !crypto.subtle || !window.indexedDB) return Promise.resolve(null);
      if (!loading) loading = load().catch(() => null);
      return loading;
    };
  })();

  // Set when the server refused this page's proofs as made out for another address (the page
  // reached under a name the server was not given with --public-url): the page goes on with
  // bearer tokens, as a browser without WebCrypto would.
  let dpopOff = false;
  async function proofForAnotherAddress(res) {
    if (dpopOff || !res || res.status !== 400) return false;
    try {
      const body = await res.clone().json();
      return body.error === 'invalid_dpop_proof' && /another URI/.test(body.error_description || '');
    } catch {
      return false;
    }
  }

  // The server's latest DPoP nonce (sent in DPoP-Nonce when it hands them out), put in every
  // proof.
  let dpopNonce = null;
  // Keeps the nonce `res` hands out; true when it refused the proof for the lack of a fresh
  // one (400 from a token endpoint, 401 from the API): the request is then sent once more.
  async function nonceAsked(res) {
    const nonce = res && res.headers.get('DPoP-Nonce');
    if (!nonce) return false;
    dpopNonce = nonce;
    if (res.status === 401) return (res.headers.get('WWW-Authenticate') || '').includes('use_dpop_nonce');
    if (res.status !== 400) return false;
    try {
      return (await res.clone().json()).error === 'use_dpop_nonce';
    } catch {
      return false;
    }
  }

  // The DPoP header for `method` on `path`, bound to `token` when given; {} without a key.
  async function dpopHeaders(method, path, token) {
    if (dpopOff) return {};
    const key = await dpopKey();
    if (!key) return {};
    const url = new URL(path, location.origin);
    const jti = new Uint8Array(16);
    crypto.getRandomValues(jti);
    const claims = {
      jti: b64u(jti),
      htm: method,
      htu: url.origin + url.pathname,
      iat: Math.floor(Date.now() / 1000),
    };
    if (token) claims.ath = b64u(await crypto.subtle.digest('SHA-256', utf8(token)));
    if (dpopNonce) claims.nonce = dpopNonce;
    const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk };
    const input = `${b64u(utf8(JSON.stringify(header)))}.${b64u(utf8(JSON.stringify(claims)))}`;
    const signature = await crypto.subtle.sign(
      { name: 'ECDSA', hash: 'SHA-256' },
      key.pair.privateKey,
      utf8(input),
    );
    return { DPoP: `${input}.${b64u(signature)}` };
  }

  // Takes the token of a token response (login, refresh, reauthenticate) and tells the other
  // tabs.
  function took(body) {
    accessToken = body.access_token;
    tokenType = body.token_type === 'DPoP' ? 'DPoP' : 'Bearer';
    share({ type: 'token', token: accessToken, tokenType });
  }

  // Tabs of this page agree: one refresh at a time across them (Web Locks), the new access
  // token handed to the others (BroadcastChannel, same origin only), and a sign-out in one
  // tab signs out every tab.
  const channel = 'BroadcastChannel' in window ? new BroadcastChannel('baton-auth') : null;
  let tokenWaiters = [];
  function share(message) {
    if (channel) channel.postMessage(message);
  }
  // Resolves when another tab hands over a token, or after `ms`.
  function tokenFromAnotherTab(ms) {
    return new Promise((resolve) => {
      tokenWaiters.push(resolve);
      setTimeout(resolve, ms);
    });
  }

  // The wait a 503 or 429 asks for (Retry-After in seconds), between 1 and 10 s.
  function retryAfterMs(res) {
    const seconds = Number.parseInt((res && res.headers.get('Retry-After')) || '', 10);
    return Math.min(Math.max(Number.isFinite(seconds) ? seconds : 1, 1), 10) * 1000;
  }

  // One refresh at a time: every caller that needs one shares the same request. A 503 (the
  // server's store is busy), a 429, any 5xx or no answer at all is not a sign-out: it is
  // retried as the server asks, a few times, and the session is kept. Resolves to 'ok', 'signed-out' (the
  // server refused the refresh token) or 'unavailable' (still busy after the retries).
  // `stale`: the token a refused call carried (a newer one, from another tab, is used instead).
  function refresh(stale = accessToken) {
    if (!refreshing) {
      const fresh = () => accessToken && accessToken !== stale;
      let waited = false;
      const run = async () => {
        // Another tab held the lock: it refreshed, and its token is on the way over the
        // channel (or here already).
        if (waited && !fresh()) await tokenFromAnotherTab(1000);
        await sleep(0); // a token message already queued is handled first
        if (fresh()) return 'ok';
        for (let attempt = 1; ; attempt += 1) {
          let res = null;
          try {
            const send = async () =>
              fetch('/auth/refresh', {
                method: 'POST',
                credentials: 'same-origin',
                headers: await dpopHeaders('POST', '/auth/refresh'),
              });
            res = await send();
            if (await nonceAsked(res)) res = await send();
            if (await proofForAnotherAddress(res)) {
              dpopOff = true;
              res = await send();
            }
          } catch {
            res = null;
          }
          if (res && res.ok) {
            took(await res.json());
            if (attempt > 1) status('');
            return 'ok';
          }
          // Only a refusal of the refresh token itself signs out; a timeout, a limit, a
          // server or proxy in trouble (408, 429, 5xx) or a nonce that turned again (instances
          // a little apart at the turn) is waited out.
          if (res && [400, 401, 403].includes(res.status) && !(await nonceAsked(res))) {
            accessToken = null;
            share({ type: 'signed-out' });
            return 'signed-out';
          }
          if (attempt >= 5) {
            status('The server is busy; your session is kept. Try again in a moment.', true);
            return 'unavailable';
          }
          status('The server is busy; retrying…');
          await sleep(retryAfterMs(res));
        }
      };
      const locked = navigator.locks
        ? navigator.locks
            .request('baton-refresh', { ifAvailable: true }, (lock) => (lock ? run() : null))
            .then((outcome) => {
              if (outcome !== null) return outcome;
              waited = true;
              return navigator.locks.request('baton-refresh', run);
            })
        : run();
      refreshing = locked.finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  // Every API call goes through here: on a 401 invalid_token it refreshes once and retries.
  // Resolves to the response and the refresh's outcome ('ok' when none was needed).
  async function api(path, options = {}) {
    const send = async () => {
      const headers = Object.assign({}, options.headers || {});
      if (accessToken) {
        headers.Authorization = `${tokenType} ${accessToken}`;
        if (tokenType === 'DPoP') {
          Object.assign(headers, await dpopHeaders(options.method || 'GET', path, accessToken));
        }
      }
      return fetch(path, Object.assign({}, options, { headers, credentials: 'same-origin' }));
    };
    const sentWith = accessToken;
    let res = await send();
    // A proof refused (a clock far off, a cache that lost track, a nonce that turned) is not
    // a sign-out: one more try with a fresh proof.
    if (
      (await nonceAsked(res)) ||
      (res.status === 401 && (res.headers.get('WWW-Authenticate') || '').includes('invalid_dpop_proof'))
    ) {
      res = await send();
    }
    let refreshed = 'ok';
    const challenge = res.headers.get('WWW-Authenticate') || '';
    if (res.status === 401 && (challenge.includes('invalid_token') || !accessToken)) {
      // A newer token may have come from another tab meanwhile: no refresh for that one.
      refreshed = accessToken && accessToken !== sentWith ? 'ok' : await refresh(sentWith);
      if (refreshed === 'ok') res = await send();
    }
    return { res, refreshed };
  }

  // What a failed call means: signed out only when the refresh was refused, not when the
  // server was busy (refresh() has said so already).
  async function failed({ res, refreshed }) {
    const nonce = (res.headers.get('WWW-Authenticate') || '').includes('use_dpop_nonce');
    if (res.status === 401 && refreshed !== 'unavailable' && !nonce) return signedOut('Please log in.');
    if (refreshed !== 'unavailable') status(await errorText(res), true);
  }

  // The password form for a sensitive action the server wants a recent sign-in for: resolves
  // to the password, or null when the user cancels.
  let passwordWaiter = null;
  function askPassword() {
    // One prompt at a time: an earlier one still open counts as cancelled.
    if (passwordWaiter) answerPassword(null);
    $('reauth-form').hidden = false;
    $('reauth-password').value = '';
    $('reauth-password').focus();
    return new Promise((resolve) => {
      passwordWaiter = resolve;
    });
  }

  function answerPassword(value) {
    const resolve = passwordWaiter;
    passwordWaiter = null;
    $('reauth-form').hidden = true;
    if (resolve) resolve(value);
  }

  $('reauth-form').addEventListener('submit', (event) => {
    event.preventDefault();
    answerPassword($('reauth-password').value);
  });
  $('reauth-cancel').addEventListener('click', () => answerPassword(null));

  // Asks for the password until it is right (true), or the user gives up or the server says
  // no more (false). The answer is a new access token for this same session.
  async function reauthenticate() {
    status('Enter your password to continue.');
    for (;;) {
      const password = await askPassword();
      if (password === null) {
        if (accessToken) status('Cancelled.');
        return false;
      }
      const call = await api('/auth/reauthenticate', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ password }),
      });
      if (call.res.ok) {
        took(await call.res.json());
        return true;
      }
      let code = '';
      if (call.res.status === 403) {
        try {
          code = (await call.res.clone().json()).error;
        } catch {
          code = '';
        }
      }
      if (code !== 'invalid_credentials') {
        await failed(call);
        return false;
      }
      status('Wrong password; try again.', true);
    }
  }

  // A sensitive call: when the server asks for a more recent sign-in (RFC 9470), ask for the
  // password, then send it again once. Resolves to the call, or null when cancelled.
  async function sensitive(path, options) {
    const wantsRecentLogin = (res) =>
      res.status === 401 &&
      (res.headers.get('WWW-Authenticate') || '').includes('insufficient_user_authentication');
    let call = await api(path, options);
    if (wantsRecentLogin(call.res)) {
      if (!(await reauthenticate())) return null;
      call = await api(path, options);
      // Still not enough (a stronger sign-in is wanted): say so; the session is fine.
      if (wantsRecentLogin(call.res)) {
        status('This needs a stronger sign-in; log out and log in again.', true);
        return null;
      }
    }
    return call;
  }

  async function postJson(path, body) {
    const send = async () => {
      const proof = path === '/auth/login' ? await dpopHeaders('POST', path) : {};
      return fetch(path, {
        method: 'POST',
        headers: Object.assign({ 'Content-Type': 'application/json' }, proof),
        credentials: 'same-origin',
        body: JSON.stringify(body),
      });
    };
    let res = await send();
    if (await nonceAsked(res)) res = await send();
    if (await proofForAnotherAddress(res)) {
      dpopOff = true;
      res = await send();
    }
    return res;
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      return body.error_description || body.error || res.statusText;
    } catch {
      return res.statusText;
    }
  }

  function show(signedIn) {
    $('signed-in').hidden = !signedIn;
    $('signed-out').hidden = signedIn;
  }

  function signedOut(message) {
    accessToken = null;
    answerPassword(null);
    show(false);
    status(message);
  }

  if (channel) {
    channel.onmessage = ({ data }) => {
      if (data && data.type === 'token' && typeof data.token === 'string') {
        const wasSignedOut = !accessToken;
        accessToken = data.token;
        tokenType = data.tokenType === 'DPoP' ? 'DPoP' : 'Bearer';
        const waiters = tokenWaiters;
        tokenWaiters = [];
        waiters.forEach((resolve) => resolve());
        if (wasSignedOut) {
          whoami();
          devices();
        }
      } else if (data && data.type === 'signed-out' && accessToken) {
        signedOut('Signed out in another tab.');
      }
    };
  }

  async function whoami() {
    const call = await api('/api/me');
    const res = call.res;
    if (!res.ok) return failed(call);
    const me = await res.json();
    checks += 1;
    $('whoami-output').textContent = `Signed in as ${me.username} (check ${checks})`;
    show(true);
  }

  // "Chrome on Linux", from the server's reading of the user agent.
  function deviceName(session) {
    const d = session.device;
    if (!d) return 'Unknown device';
    if (d.browser && d.os) return `${d.browser} on ${d.os}`;
    return d.browser || (d.os ? `${d.os} device` : 'Unknown device');
  }

  function ago(ms) {
    const minutes = Math.round((Date.now() - ms) / 60000);
    if (minutes < 1) return 'just now';
    if (minutes < 60) return minutes === 1 ? '1 minute ago' : `${minutes} minutes ago`;
    const hours = Math.round(minutes / 60);
    if (hours < 48) return hours === 1 ? '1 hour ago' : `${hours} hours ago`;
    return new Date(ms).toLocaleDateString();
  }

  function describe(session) {
    const li = document.createElement('li');
    const text = document.createElement('div');
    const agent = document.createElement('div');
    agent.className = 'agent';
    agent.textContent = deviceName(session);
    agent.title = session.user_agent || '';
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = `${session.ip || 'unknown IP'} · last used ${ago(session.last_used_at)}`;
    if (session.network_changed_at) {
      const flag = document.createElement('span');
      flag.className = 'flag';
      flag.textContent = ` · new network ${ago(session.network_changed_at)}`;
      meta.append(flag);
    }
    text.append(agent, meta);
    li.append(text);
    if (session.current) {
      const here = document.createElement('span');
      here.className = 'current';
      here.textContent = 'this device';
      li.append(here);
    } else {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Log out this device';
      button.addEventListener('click', async () => {
        const call = await sensitive(`/auth/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' });
        if (!call) return;
        if (!call.res.ok) return failed(call);
        status('Device logged out.');
        devices();
      });
      li.append(button);
    }
    return li;
  }

  async function devices() {
    const { res } = await api('/auth/sessions');
    if (!res.ok) return;
    const { sessions } = await res.json();
    $('devices').replaceChildren(...sessions.map(describe));
  }

  async function login(username, password) {
    const res = await postJson('/auth/login', { username, password });
    if (!res.ok) return status(await errorText(res), true);
    took(await res.json());
    status('');
    await whoami();
    await devices();
  }

  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    login($('login-username').value, $('login-password').value);
  });

  $('register-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = $('register-username').value;
    const password = $('register-password').value;
    const res = await postJson('/auth/register', { username, password });
    if (!res.ok) return status(await errorText(res), true);
    await login(username, password);
  });

  $('whoami-button').addEventListener('click', whoami);
  $('devices-button').addEventListener('click', devices);

  $('logout-button').addEventListener('click', async () => {
    let res = null;
    try {
      // A session bound to this browser's key ends only with a proof of it.
      const send = async () =>
        fetch('/auth/logout', {
          method: 'POST',
          credentials: 'same-origin',
          headers: await dpopHeaders('POST', '/auth/logout'),
        });
      res = await send();
      if (await nonceAsked(res)) res = await send();
    } catch {
      res = null;
    }
    // No answer or a 5xx: the logout may not be recorded; stay signed in and say so.
    if (!res) return status('The server did not answer; try again.', true);
    if (res.status >= 500) return status(await errorText(res), true);
    share({ type: 'signed-out' });
    signedOut('Logged out.');
  });

  $('logout-all-button').addEventListener('click', async () => {
    const call = await api('/auth/logout-all', { method: 'POST' });
    // A 503 means the logout was not recorded: stay signed in and say so.
    if (call.res.status === 503 || call.refreshed === 'unavailable') return failed(call);
    share({ type: 'signed-out' });
    signedOut('Logged out everywhere.');
  });

  $('logout-others-button').addEventListener('click', async () => {
    const call = await sensitive('/auth/logout-others', { method: 'POST' });
    if (!call) return;
    if (!call.res.ok) return failed(call);
    const { revoked } = await call.res.json();
    status(revoked === 1 ? 'Signed out 1 other device.' : `Signed out ${revoked} other devices.`);
    devices();
  });

  // Sign-in with OpenID Connect providers: a link per provider the server lists (none: the
  // card stays hidden). The provider sends the browser back through the server, which opens
  // the session (the refresh cookie) and lands here; a failure lands here with ?oidc_error=.
  const oidcErrors = {
    access_denied: 'Sign-in was cancelled.',
    expired: 'The sign-in took too long or was not started here; try again.',
    state_mismatch: 'The sign-in could not be verified; try again.',
    provider_unavailable: 'The provider did not answer; try again later.',
    too_many_requests: 'Too many sign-ins; wait a minute and try again.',
    unavailable: 'The service is busy; try again in a moment.',
    identity_taken: 'That account at the provider belongs to another user here.',
  };

  async function providers() {
    let list = [];
    try {
      const res = await fetch('/auth/oidc/providers', { credentials: 'same-origin' });
      if (res.ok) list = (await res.json()).providers || [];
    } catch {
      list = [];
    }
    const buttons = list
      .filter((p) => typeof p.id === 'string' && typeof p.start === 'string')
      .map((p) => {
        const a = document.createElement('a');
        a.className = 'button';
        a.id = `oidc-${p.id}`;
        a.href = `${p.start}?return_to=/`;
        a.textContent = `Sign in with ${p.name}`;
        return a;
      });
    $('provider-buttons').replaceChildren(...buttons);
    $('providers').hidden = buttons.length === 0;
  }

  function oidcOutcome() {
    const code = new URLSearchParams(location.search).get('oidc_error');
    if (code === null) return '';
    history.replaceState(null, '', location.pathname);
    return Object.hasOwn(oidcErrors, code)
      ? oidcErrors[code]
      : `Sign-in failed (${code.replace(/[^a-z_]/g, '')}).`;
  }

  // A reload keeps the user logged in: the refresh cookie gets a new access token. While the
  // server is busy the page keeps trying, and never shows the login form for it.
  async function start() {
    const outcome = await refresh();
    if (outcome === 'ok') {
      await whoami();
      await devices();
    } else if (outcome === 'unavailable') {
      setTimeout(start, 5000);
    } else {
      signedOut('');
    }
    if (failure) status(failure, true);
  }
  const failure = oidcOutcome();
  providers();
  start();
})();
