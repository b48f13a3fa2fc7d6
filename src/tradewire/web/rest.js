// The REST API under /api/v1, with the API key. Errors carry the hub's own message ({"error": {code, message}}).

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from a numeric Retry-After (429, 503), else null
  }
}

function retryAfterOf(res) {
  const value = Number.parseInt(res.headers.get('retry-after') ?? '', 10);
  return Number.isFinite(value) && value >= 0 ? value : null;
}

export function makeApi(key, origin = location.origin) {
  async function request(method, path, params) {
    const url = new URL(`/api/v1/${path}`, origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== '') url.searchParams.set(name, String(value));
    }
    let res;
    try {
      res = await fetch(url, { method, headers: { 'x-api-key': key, accept: 'application/json' }, cache: 'no-store' });
    } catch {
      throw new ApiError(0, 'unreachable', 'the hub cannot be reached');
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (!res.ok) {
      const err = body && body.error;
      const code = (err && err.code) || `http_${res.status}`;
      throw new ApiError(res.status, code, (err && err.message) || res.statusText, retryAfterOf(res));
    }
    return body;
  }
  return {
    get: (path, params) => request('GET', path, params),
    post: (path, params) => request('POST', path, params),
  };
}
