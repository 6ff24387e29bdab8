/**
 * The studies every running kernel holds, refreshed from the server; shared by the panel and
 * the status-bar item.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { requestAPI } from './api';
import { IKernelStudies } from './logic';

export class StudiesModel {
  constructor(interval = 3000) {
    this._poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval, backoff: true, max: 30 * 1000 },
      standby: 'when-hidden'
    });
  }

  /** Running kernels and their studies (last refresh). */
  get kernels(): IKernelStudies[] {
    return this._kernels;
  }

  /** Emitted after every refresh that changed the list. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Ask the server now. */
  async refresh(): Promise<void> {
    const data = await requestAPI<{ kernels: IKernelStudies[] }>('studies');
    const text = JSON.stringify(data.kernels);
    if (text !== this._last) {
      this._last = text;
      this._kernels = data.kernels;
      this._changed.emit();
    }
  }

  /** Close a study in its kernel (drops its decrypted buffers there). */
  async close(kernelId: string, studyId: string): Promise<void> {
    await requestAPI('studies/close', {
      method: 'POST',
      body: JSON.stringify({ kernel_id: kernelId, study_id: studyId })
    });
    await this.refresh();
  }

  dispose(): void {
    this._poll.dispose();
  }

  private _poll: Poll;
  private _kernels: IKernelStudies[] = [];
  private _last = '';
  private _changed = new Signal<this, void>(this);
}
