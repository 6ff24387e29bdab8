/**
 * Status-bar item: how many studies are decrypted in the current notebook's kernel.
 */
import { INotebookTracker } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { statusLabel, studyCount } from './logic';
import { StudiesModel } from './model';

export class StudyStatus extends Widget {
  constructor(model: StudiesModel, tracker: INotebookTracker, onClick: () => void) {
    super({ node: document.createElement('button') });
    this.addClass('medsec-nb-Status');
    this.node.setAttribute('type', 'button');
    this.node.addEventListener('click', onClick);
    this._model = model;
    this._tracker = tracker;
    model.changed.connect(this.update, this);
    tracker.currentChanged.connect(this._watch, this);
    this._watch();
  }

  /** Studies decrypted in the current notebook's kernel. */
  get count(): number {
    const kernel = this._tracker.currentWidget?.sessionContext.session?.kernel;
    return studyCount(this._model.kernels, kernel?.id);
  }

  protected onUpdateRequest(): void {
    const label = statusLabel(this.count);
    this.node.textContent = `🔒 ${label.text}`;
    this.node.title = label.title;
    this.node.dataset.state = label.state;
  }

  private _watch(): void {
    const current = this._tracker.currentWidget;
    current?.sessionContext.kernelChanged.connect(this._kernelChanged, this);
    this.update();
  }

  private _kernelChanged(): void {
    this.update();
  }

  private _model: StudiesModel;
  private _tracker: INotebookTracker;
}
