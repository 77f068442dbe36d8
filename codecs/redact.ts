/**
 * Secrets out of logs and error messages: the password of a URL (`redis://user:pw@host`,
 * `postgres://user:pw@host/db`) becomes `***`. The one helper for every line that prints a URL.
 */

/**
 * `scheme://user:password@`: the password runs to the last `@` before the host, so one with an
 * unencoded `@` is hidden whole.
 */
const USERINFO = /([a-z][a-z0-9+.-]*:\/\/)([^\s/@:]*):([^\s/]*)@/gi;

/**
 * A URL, or any text holding URLs (an error message), with each password replaced by `***`.
 * The user name stays: it helps find the account.
 */
export function redactUrl(text: string): string {
  return text.replace(USERINFO, (_, scheme: string, user: string) => `${scheme}${user}:***@`);
}
