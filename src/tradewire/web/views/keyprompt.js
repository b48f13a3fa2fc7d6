// Asks for the API key (once per browser tab: it is kept in sessionStorage), and says why when the hub refused one.

import { html, useState } from '../ui.js';

export function KeyPrompt({ error, onKey }) {
  const [value, setValue] = useState('');
  const submit = (e) => {
    e.preventDefault();
    if (value.trim()) onKey(value.trim());
  };
  return html`
    <div class="keyprompt">
      <form class="panel" onSubmit=${submit} data-testid="key-form">
        <div class="brand big">tradewire</div>
        <p>Enter an API key to open the fleet dashboard. A <b>read</b> key shows everything; an <b>admin</b> key can also
        acknowledge alerts. It is kept for this tab only.</p>
        ${error && html`<div class="auth-error" data-testid="auth-error" role="alert"><b>The hub refused this API key</b> (${error}). Check it, or ask for a new one.</div>`}
        <input
          type="password"
          autocomplete="off"
          spellcheck="false"
          placeholder="twk_…"
          data-testid="key-input"
          value=${value}
          onInput=${(e) => setValue(e.currentTarget.value)}
          autofocus
        />
        <button type="submit" data-testid="key-submit">Open dashboard</button>
        <p class="dim">Tip: <code>tradewire key issue --role read</code> prints a key; a link may carry it as <code>/#key=…</code>.</p>
      </form>
    </div>
  `;
}
