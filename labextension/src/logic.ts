/**
 * Pure front-end logic of the medsec-nb panel: no DOM, no JupyterLab services (unit-tested).
 */

/** A study open in a kernel, as `GET /medsec/studies` lists it (no PHI). */
export interface IStudy {
  id: string;
  name: string;
  instances: number;
  purpose: string;
  user: string;
  opened: string;
}

/** A running kernel and the studies it holds. */
export interface IKernelStudies {
  kernel_id: string;
  name: string;
  notebook: string | null;
  studies: IStudy[];
}

/** One row of the audit table, as `GET /medsec/audit` returns it. */
export interface IAuditRow {
  seq: number;
  time: string;
  user: string | null;
  action: string;
  outcome: string;
  purpose: string | null;
  study: string | null;
  instances: number | null;
  kernel_id: string | null;
}

/** A page of audit rows, newest first; `next` continues with older rows. */
export interface IAuditPage {
  records: IAuditRow[];
  next: number | null;
  size: number;
}

/** Filters of the audit table (empty strings mean "any"). */
export interface IAuditFilters {
  study?: string;
  user?: string;
  action?: string;
  outcome?: string;
  purpose?: string;
  since?: string;
}

const FILTER_KEYS: (keyof IAuditFilters)[] = ['study', 'user', 'action', 'outcome', 'purpose', 'since'];

/** Query string of `GET /medsec/audit` (filters, page size, cursor); empty filters are left out. */
export function auditQuery(filters: IAuditFilters, limit = 100, before: number | null = null): string {
  const params = new URLSearchParams();
  for (const key of FILTER_KEYS) {
    const value = (filters[key] ?? '').trim();
    if (value) {
      params.set(key, value);
    }
  }
  params.set('limit', String(limit));
  if (before !== null) {
    params.set('before', String(before));
  }
  return params.toString();
}

/** Number of studies open in the kernel `kernelId` (0 when unknown). */
export function studyCount(kernels: IKernelStudies[], kernelId: string | null | undefined): number {
  const kernel = kernels.find(k => k.kernel_id === kernelId);
  return kernel ? kernel.studies.length : 0;
}

/** Status-bar text and state for a count of decrypted studies. */
export function statusLabel(count: number): { text: string; state: 'open' | 'none'; title: string } {
  if (count <= 0) {
    return { text: 'No decrypted studies', state: 'none', title: 'No study is decrypted in this kernel' };
  }
  const noun = count === 1 ? 'study' : 'studies';
  return {
    text: `${count} decrypted ${noun}`,
    state: 'open',
    title: `${count} ${noun} decrypted in this kernel's memory; click to open the Secure studies panel`
  };
}

/** Merge a refreshed newest page into rows already shown (by sequence number, newest first). */
export function mergeNewest(shown: IAuditRow[], newest: IAuditRow[]): IAuditRow[] {
  const top = shown.length ? shown[0].seq : 0;
  const fresh = newest.filter(r => r.seq > top);
  return fresh.concat(shown);
}

/** Short local display of a record time (`2025-01-31T14:03:07.123456Z` -> `2025-01-31 14:03:07`). */
export function shortTime(time: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(time);
  return m ? `${m[1]} ${m[2]}` : time;
}

/** Compact time for the audit table (`2025-01-31T14:03:07.123456Z` -> `01-31 14:03:07`). */
export function tableTime(time: string): string {
  const m = /^\d{4}-(\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(time);
  return m ? `${m[1]} ${m[2]}` : time;
}

const PURPOSE = /^[A-Za-z0-9_.-]{1,64}$/;

/** What the "open a study" form asks for. */
export interface IOpenRequest {
  /** The `.msec` path relative to the notebook's folder. */
  study: string;
  /** Purpose of use (e.g. EDU, HRESCH, TREAT). */
  purpose: string;
  /** Private key file; empty: ask for the study passphrase instead. */
  identity: string;
}

function quoted(what: string, value: string): string {
  if (!value || /["\n\r\\]/.test(value)) {
    throw new Error(`${what} must be a non-empty path without quotes, backslashes or line breaks`);
  }
  return `"${value}"`;
}

/** The cell that opens a study with `%load_secure_study` (no secret is ever in it). */
export function loadStudyCell(req: IOpenRequest): string {
  const purpose = req.purpose.trim();
  if (!PURPOSE.test(purpose)) {
    throw new Error('purpose must be a code such as EDU, HRESCH or TREAT (letters, digits, _ . -)');
  }
  const identity = req.identity.trim();
  const how = identity ? `--identity ${quoted('identity', identity)}` : '--passphrase-prompt';
  return (
    '%load_ext medsec_nb\n' +
    `%load_secure_study ${quoted('study', req.study.trim())} ${how} --purpose ${purpose}`
  );
}

/** Folder part and base name of a server path (`a/b/c.msec` -> [`a/b`, `c.msec`]). */
export function splitPath(path: string): [string, string] {
  const cut = path.lastIndexOf('/');
  return cut < 0 ? ['', path] : [path.slice(0, cut), path.slice(cut + 1)];
}
