/**
 * Opening a `.msec` file: its public header (`GET /medsec/inspect`) and a form asking for the
 * purpose of use and the identity (key file), used by the document view and by the dialog.
 */
import { DocumentRegistry, DocumentWidget, ABCWidgetFactory, TextModelFactory } from '@jupyterlab/docregistry';
import { Contents } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { requestAPI } from './api';
import { IOpenRequest, loadStudyCell, splitPath } from './logic';

/** The public header of a container, as `GET /medsec/inspect` returns it. */
export interface IPublicHeader {
  name: string;
  version: number;
  instances: number;
  bytes: number;
  chunk_size: number;
  recipients: string[];
  passphrase: boolean;
  signer: string | null;
  signature_valid: boolean | null;
  complete: boolean;
}

export const FILE_TYPE = 'medsec-study';
export const FACTORY = 'medsec-nb:study';
const MODEL = 'medsec-nb:header-only';
const PURPOSES = ['EDU', 'HRESCH', 'TREAT', 'HOPERAT', 'CLINTRCH', 'PUBHLTH', 'TRAIN', 'HTEST'];

export function fetchHeader(path: string): Promise<IPublicHeader> {
  return requestAPI<IPublicHeader>(`inspect?${new URLSearchParams({ path }).toString()}`);
}

/** The header as a definition list (no PHI is in it). */
export function headerNode(h: IPublicHeader): HTMLElement {
  const dl = document.createElement('dl');
  dl.className = 'medsec-nb-header';
  const sig = h.signer ? `${h.signer} (${h.signature_valid ? 'valid over header' : 'INVALID'})` : 'none';
  const rows: [string, string][] = [
    ['file', h.name],
    ['format', `medsec container v${h.version} (AES-256-GCM)`],
    ['instances', String(h.instances)],
    ['size', `${h.bytes} bytes${h.complete ? '' : ' — does not match the header (truncated?)'}`],
    ['recipients', h.recipients.join('\n')],
    ['signer', sig]
  ];
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  }
  return dl;
}

/** Purpose and identity inputs; `value` is the request for `loadStudyCell`. */
export class OpenForm extends Widget {
  constructor(private readonly _study: string) {
    super();
    this.addClass('medsec-nb-openform');
    const list = document.createElement('datalist');
    list.id = `medsec-nb-purposes-${Private.next++}`;
    for (const p of PURPOSES) {
      list.append(Object.assign(document.createElement('option'), { value: p }));
    }
    this._purpose = Object.assign(document.createElement('input'), {
      name: 'purpose',
      value: 'EDU',
      required: true
    });
    this._purpose.setAttribute('list', list.id);
    this._identity = Object.assign(document.createElement('input'), {
      name: 'identity',
      placeholder: 'key file (empty: ask for the study passphrase)'
    });
    this.node.append(
      this._label('Purpose of use', this._purpose),
      list,
      this._label('Identity (private key file, relative to the notebook)', this._identity)
    );
  }

  get value(): IOpenRequest {
    return { study: this._study, purpose: this._purpose.value, identity: this._identity.value };
  }

  /** The `%load_secure_study` cell (throws with a message if an input is invalid). */
  cell(): string {
    return loadStudyCell(this.value);
  }

  private _label(text: string, input: HTMLInputElement): HTMLLabelElement {
    const label = document.createElement('label');
    label.append(text, input);
    return label;
  }

  private _purpose: HTMLInputElement;
  private _identity: HTMLInputElement;
}

/** Where the cell goes. */
export type OpenTarget = 'new' | 'current';
export type Opener = (path: string, form: OpenForm, target: OpenTarget) => Promise<void>;

/** The document view of a `.msec` file: header, form, open buttons. The file is never loaded. */
export class StudyView extends Widget {
  constructor(private readonly _path: string, open: Opener) {
    super();
    this.addClass('medsec-nb-StudyView');
    const [, base] = splitPath(_path);
    this._form = new OpenForm(base);
    const header = document.createElement('div');
    header.textContent = 'Reading the public header…';
    const error = document.createElement('div');
    error.className = 'medsec-nb-error';
    const buttons = document.createElement('div');
    buttons.className = 'medsec-nb-buttons';
    for (const [label, target] of [
      ['Open in a new notebook', 'new'],
      ['Insert in the current notebook', 'current']
    ] as [string, OpenTarget][]) {
      const b = Object.assign(document.createElement('button'), {
        type: 'button',
        className: 'jp-Button jp-mod-styled jp-mod-accept medsec-nb-button',
        textContent: label
      });
      b.addEventListener('click', () => {
        error.textContent = '';
        open(this._path, this._form, target).catch(e => (error.textContent = (e as Error).message));
      });
      buttons.append(b);
    }
    const title = document.createElement('h2');
    title.textContent = `Encrypted study ${base}`;
    this.node.append(title, header, this._form.node, buttons, error);
    fetchHeader(_path)
      .then(h => header.replaceChildren(headerNode(h)))
      .catch(e => (header.textContent = (e as Error).message));
  }

  private _form: OpenForm;
}

/** Text model that never loads the file's content (`fileFormat` null). */
export class HeaderOnlyModelFactory extends TextModelFactory {
  get name(): string {
    return MODEL;
  }
  get fileFormat(): Contents.FileFormat {
    return null;
  }
}

/** Opens `.msec` files as a `StudyView`. */
export class StudyViewFactory extends ABCWidgetFactory<DocumentWidget<StudyView>> {
  constructor(private readonly _open: Opener) {
    super({ name: FACTORY, label: 'Secure study', modelName: MODEL, fileTypes: [FILE_TYPE], defaultFor: [FILE_TYPE], readOnly: true });
  }

  protected createNewWidget(context: DocumentRegistry.Context): DocumentWidget<StudyView> {
    const widget = new DocumentWidget({ context, content: new StudyView(context.path, this._open) });
    widget.addClass('medsec-nb-StudyDocument');
    return widget;
  }
}

namespace Private {
  export let next = 0;
}
