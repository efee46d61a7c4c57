// The baton login app's page. The access token lives only in this closure: never in
// localStorage, sessionStorage or a readable cookie. The refresh token is an HttpOnly cookie
// the browser sends to /auth only.
(() => {
  'use strict';

  let accessToken = null;
  let refreshing = null;
  let checks = 0;
  const $ = (id) => document.getElementById(id);

  function status(message, isError) {
    $('status').textContent = message || '';
    $('status').className = isError ? 'error' : '';
  }

  // One refresh at a time: every caller that needs one shares the same request.
  function refresh() {
    if (!refreshing) {
      refreshing = fetch('/auth/refresh', { method: 'POST', credentials: 'same-origin' })
        .then(async (res) => {
          if (!res.ok) {
            accessToken = null;
            return false;
          }
          accessToken = (await res.json()).access_token;
          return true;
        })
        .catch(() => false)
        .finally(() => {
          refreshing = null;
        });
    }
    return refreshing;
  }

  // Every API call goes through here: on a 401 invalid_token it refreshes once and retries.
  async function api(path, options = {}) {
    const send = () => {
      const headers = Object.assign({}, options.headers || {});
      if (accessToken) headers.Authorization = 'Bearer ' + accessToken;
      return fetch(path, Object.assign({}, options, { headers, credentials: 'same-origin' }));
    };
    let res = await send();
    const challenge = res.headers.get('WWW-Authenticate') || '';
    if (res.status === 401 && (challenge.includes('invalid_token') || !accessToken)) {
      if (await refresh()) res = await send();
    }
    return res;
  }

  async function postJson(path, body) {
    return fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify(body),
    });
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
    show(false);
    status(message);
  }

  async function whoami() {
    const res = await api('/api/me');
    if (!res.ok) return signedOut('Please log in.');
    const me = await res.json();
    checks += 1;
    $('whoami-output').textContent = `Signed in as ${me.username} (check ${checks})`;
    show(true);
  }

  function describe(session) {
    const li = document.createElement('li');
    const text = document.createElement('div');
    const agent = document.createElement('div');
    agent.className = 'agent';
    agent.textContent = session.user_agent || 'Unknown device';
    const meta = document.createElement('div');
    meta.className = 'meta';
    const used = new Date(session.last_used_at).toLocaleString();
    meta.textContent = `${session.ip || 'unknown IP'} · last used ${used}`;
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
        const res = await api(`/auth/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' });
        status(res.ok ? 'Device logged out.' : await errorText(res), !res.ok);
        devices();
      });
      li.append(button);
    }
    return li;
  }

  async function devices() {
    const res = await api('/auth/sessions');
    if (!res.ok) return;
    const { sessions } = await res.json();
    $('devices').replaceChildren(...sessions.map(describe));
  }

  async function login(username, password) {
    const res = await postJson('/auth/login', { username, password });
    if (!res.ok) return status(await errorText(res), true);
    accessToken = (await res.json()).access_token;
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
    await fetch('/auth/logout', { method: 'POST', credentials: 'same-origin' });
    signedOut('Logged out.');
  });

  $('logout-all-button').addEventListener('click', async () => {
    await api('/auth/logout-all', { method: 'POST' });
    signedOut('Logged out everywhere.');
  });

  // A reload keeps the user logged in: the refresh cookie gets a new access token.
  refresh().then(async (ok) => {
    if (ok) {
      await whoami();
      await devices();
    } else {
      signedOut('');
    }
  });
})();
