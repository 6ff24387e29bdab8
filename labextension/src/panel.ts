/**
 * The "Secure studies" sidebar panel: studies per running kernel (with a close button), the
 * chain's verification status with its last checkpoint, exports, and a live, filterable
 * audit table paged on the server.
 */
import { showErrorMessage } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { raw, requestAPI } from './api';
import { IAuditFilters, IAuditPage, IAuditRow, auditQuery, mergeNewest, shortTime, tableTime } from './logic';
import { StudiesModel } from './model';

/** The chain status `GET /medsec/audit/verify` returns. */
interface IChainStatus {
  ok: boolean;
  records: number;
  checkpoints: number;
  first_bad_line: number | null;
  message: string;
  last_checkpoint: { size: number; time: string; signer: string | null } | null;
}

const PAGE = 100;
const FILTERS: [keyof IAuditFilters, string][] = [
  ['study', 'study (sha256 prefix)'],
  ['user', 'user'],
  ['action', 'action'],
  ['outcome', 'outcome'],
  ['purpose', 'purpose'],
  ['since', 'since (7d, 2025-01-31)']
];

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

export class SecureStudiesPanel extends Widget {
  constructor(model: StudiesModel) {
    super();
    this._model = model;
    this.addClass('medsec-nb-Panel');
    this.title.caption = 'Secure studies';

    const studies = el('section', { className: 'medsec-nb-section' }, el('h3', {}, 'Studies in running kernels'));
    this._studies = el('div', { className: 'medsec-nb-studies' });
    studies.append(this._studies);

    this._chain = el('div', { className: 'medsec-nb-chain', role: 'status' }, 'Chain not verified yet');
    const buttons = el(
      'div',
      { className: 'medsec-nb-buttons' },
      this._button('Verify chain', () => this.verify()),
      this._button('Checkpoint', () => this.checkpoint()),
      this._button('Export FHIR', () => this.exportAudit('fhir')),
      this._button('Export DICOM', () => this.exportAudit('dicom'))
    );
    const chain = el('section', { className: 'medsec-nb-section' }, el('h3', {}, 'Audit chain'), this._chain, buttons);

    const filters = el('form', { className: 'medsec-nb-filters' });
    for (const [key, label] of FILTERS) {
      const input = el('input', { type: 'text', placeholder: label, name: key, title: `Filter by ${label}` });
      input.setAttribute('aria-label', `Filter by ${label}`);
      input.addEventListener('change', () => void this.reload());
      this._inputs[key] = input;
      filters.append(input);
    }
    filters.addEventListener('submit', event => {
      event.preventDefault();
      void this.reload();
    });
    this._rows = el('tbody');
    const head = el('tr', {}, ...['#', 'UTC', 'action', 'outcome', 'user', 'study'].map(h => el('th', {}, h)));
    this._older = this._button('Older records', () => this.older());
    this._older.style.display = 'none';
    this._auditError = el('div', { className: 'medsec-nb-error' });
    const audit = el(
      'section',
      { className: 'medsec-nb-section medsec-nb-audit' },
      el('h3', {}, 'Audit log'),
      filters,
      this._auditError,
      el('div', { className: 'medsec-nb-scroll' }, el('table', { className: 'medsec-nb-table' }, el('thead', {}, head), this._rows)),
      this._older
    );
    this.node.append(studies, chain, audit);

    model.changed.connect(this._renderStudies, this);
    this._renderStudies();
    this._poll = new Poll({
      factory: () => this.newest(),
      frequency: { interval: 2000, backoff: true, max: 30 * 1000 },
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  /** Current filter values. */
  get filters(): IAuditFilters {
    const out: IAuditFilters = {};
    for (const [key] of FILTERS) {
      out[key] = this._inputs[key]?.value ?? '';
    }
    return out;
  }

  /** Replace the table with the newest page for the current filters. */
  async reload(): Promise<void> {
    this._shown = [];
    this._next = null;
    await this.newest();
  }

  /** Add records newer than those shown. */
  async newest(): Promise<void> {
    try {
      const page = await requestAPI<IAuditPage>(`audit?${auditQuery(this.filters, PAGE)}`);
      if (!this._shown.length) {
        this._next = page.next;
      }
      this._shown = mergeNewest(this._shown, page.records);
      this._auditError.textContent = '';
    } catch (error) {
      this._auditError.textContent = (error as Error).message;
      this._shown = [];
    }
    this._renderRows();
  }

  /** Append the next older page. */
  async older(): Promise<void> {
    if (this._next === null) {
      return;
    }
    const page = await requestAPI<IAuditPage>(`audit?${auditQuery(this.filters, PAGE, this._next)}`);
    this._shown = this._shown.concat(page.records);
    this._next = page.next;
    this._renderRows();
  }

  /** Verify the whole chain and its checkpoints on the server; show the outcome. */
  async verify(): Promise<void> {
    this._chain.textContent = 'Verifying…';
    try {
      const s = await requestAPI<IChainStatus>('audit/verify');
      const cp = s.last_checkpoint;
      const last = cp
        ? `last checkpoint: record ${cp.size}, ${shortTime(cp.time)}${cp.signer ? ` by ${cp.signer}` : ''}`
        : 'no checkpoint yet';
      this._chain.className = `medsec-nb-chain ${s.ok ? 'medsec-nb-ok' : 'medsec-nb-bad'}`;
      const where = s.first_bad_line !== null ? ` at line ${s.first_bad_line}` : '';
      this._chain.textContent = !s.ok
        ? `✘ Verification failed${where}: ${s.message}`
        : s.records
          ? `✔ Chain intact: ${s.records} records; ${last}`
          : '✔ No audit records yet';
    } catch (error) {
      this._chain.className = 'medsec-nb-chain medsec-nb-bad';
      this._chain.textContent = `Verification failed: ${(error as Error).message}`;
    }
  }

  /** Sign the chain head now, then verify. */
  async checkpoint(): Promise<void> {
    try {
      await requestAPI('audit/checkpoint', { method: 'POST' });
    } catch (error) {
      await showErrorMessage('Checkpoint failed', (error as Error).message);
    }
    await this.verify();
  }

  /** Download the (filtered) log as a FHIR bundle or DICOM audit messages. */
  async exportAudit(format: 'fhir' | 'dicom'): Promise<void> {
    try {
      const query = new URLSearchParams(auditQuery(this.filters));
      query.delete('limit');
      query.set('format', format);
      const response = await raw(`audit/export?${query.toString()}`);
      const url = URL.createObjectURL(await response.blob());
      const link = el('a', { href: url, download: format === 'fhir' ? 'audit-fhir.json' : 'audit-dicom.xml' });
      document.body.append(link);
      link.click();
      link.remove();
      URL.revokeObjectURL(url);
    } catch (error) {
      await showErrorMessage('Export failed', (error as Error).message);
    }
  }

  /** Close a study in its kernel. */
  async closeStudy(kernelId: string, studyId: string): Promise<void> {
    try {
      await this._model.close(kernelId, studyId);
    } catch (error) {
      await showErrorMessage('Could not close the study', (error as Error).message);
    }
  }

  protected onAfterShow(): void {
    void this._model.refresh();
    void this.reload();
    if (this._chain.textContent === 'Chain not verified yet') {
      void this.verify();
    }
  }

  dispose(): void {
    if (!this.isDisposed) {
      this._poll.dispose();
      this._model.changed.disconnect(this._renderStudies, this);
    }
    super.dispose();
  }

  private _button(label: string, action: () => Promise<void>): HTMLButtonElement {
    const button = el('button', { type: 'button', className: 'jp-Button medsec-nb-button' }, label);
    button.addEventListener('click', () => void action());
    return button;
  }

  private _renderStudies(): void {
    const kernels = this._model.kernels;
    const blocks = kernels.map(k => {
      const title = `${k.notebook ?? k.name} (kernel ${k.kernel_id.slice(0, 8)})`;
      const items = k.studies.map(s => {
        const close = this._button('Close', () => this.closeStudy(k.kernel_id, s.id));
        close.title = `Close ${s.name}: drop its keys and decrypted buffers in this kernel`;
        close.setAttribute('aria-label', `Close ${s.name}`);
        return el(
          'li',
          { className: 'medsec-nb-study' },
          el('span', { className: 'medsec-nb-study-name' }, s.name),
          el(
            'span',
            { className: 'medsec-nb-study-meta' },
            `${s.instances} instances · ${s.purpose} · ${s.user} · ${shortTime(s.opened)}`
          ),
          close
        );
      });
      const list = items.length ? el('ul', {}, ...items) : el('p', { className: 'medsec-nb-empty' }, 'no study open');
      return el('div', { className: 'medsec-nb-kernel' }, el('h4', {}, title), list);
    });
    this._studies.replaceChildren(
      ...(blocks.length ? blocks : [el('p', { className: 'medsec-nb-empty' }, 'No running kernel')])
    );
  }

  private _renderRows(): void {
    this._rows.replaceChildren(
      ...this._shown.map(r =>
        el(
          'tr',
          { className: `medsec-nb-row medsec-nb-outcome-${r.outcome}` },
          el('td', {}, String(r.seq)),
          el('td', { title: r.time }, tableTime(r.time)),
          el('td', {}, r.action),
          el('td', {}, r.outcome),
          el('td', {}, r.user ?? '–'),
          el('td', { title: r.instances !== null ? `${r.instances} instances` : '' }, r.study ?? '–')
        )
      )
    );
    this._older.style.display = this._next === null ? 'none' : '';
  }

  private _model: StudiesModel;
  private _poll: Poll;
  private _studies: HTMLDivElement;
  private _chain: HTMLDivElement;
  private _rows: HTMLTableSectionElement;
  private _older: HTMLButtonElement;
  private _auditError: HTMLDivElement;
  private _inputs: Partial<Record<keyof IAuditFilters, HTMLInputElement>> = {};
  private _shown: IAuditRow[] = [];
  private _next: number | null = null;
}
