/**
 * Calls to the medsec-nb server endpoints (`<base url>/medsec/...`), authenticated by the
 * server connection settings (token, XSRF cookie).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Fetch `medsec/<endpoint>`; errors carry the server's message. */
export async function requestAPI<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
  const response = await raw(endpoint, init);
  return (await response.json()) as T;
}

/** The raw response of `medsec/<endpoint>` (exports are not JSON). */
export async function raw(endpoint: string, init: RequestInit = {}): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'medsec', endpoint);
  let response: Response;
  try {
    // 'no-cache' (revalidate) keeps makeRequest from appending a cache-busting parameter (the
    // endpoints refuse unknown parameters)
    response = await ServerConnection.makeRequest(url, { cache: 'no-cache', ...init }, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).message || message;
    } catch {
      // not JSON: keep the status text
    }
    throw new ServerConnection.ResponseError(response, message);
  }
  return response;
}
