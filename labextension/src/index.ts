/**
 * medsec-nb JupyterLab extension: the "Secure studies" panel, `.msec` files in the file
 * browser, a status-bar item, and a command-palette entry for every action.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, InputDialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { loadStudyCell, splitPath } from './logic';
import { StudiesModel } from './model';
import { FILE_TYPE, HeaderOnlyModelFactory, OpenForm, OpenTarget, StudyViewFactory, fetchHeader, headerNode } from './open';
import { SecureStudiesPanel } from './panel';
import { StudyStatus } from './status';

const PANEL_ID = 'medsec-nb:panel';
const CATEGORY = 'Secure studies';
const AUDIT_SCHEMA = 'urn:medsec-nb:events:audit:v1';

export namespace CommandIDs {
  export const openPanel = 'medsec-nb:open-panel';
  export const refresh = 'medsec-nb:refresh';
  export const verify = 'medsec-nb:verify-audit';
  export const checkpoint = 'medsec-nb:checkpoint-audit';
  export const exportFhir = 'medsec-nb:export-fhir';
  export const exportDicom = 'medsec-nb:export-dicom';
  export const openStudy = 'medsec-nb:open-study';
  export const inspect = 'medsec-nb:inspect-study';
  export const closeStudy = 'medsec-nb:close-study';
}

export const lockIcon = new LabIcon({
  name: 'medsec-nb:lock',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">' +
    '<g class="jp-icon3" fill="#616161"><path d="M12 2a5 5 0 0 0-5 5v3H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8a2 2 0 0 0-2-2h-1V7a5 5 0 0 0-5-5zm-3 8V7a3 3 0 0 1 6 0v3zm3 3.5a1.75 1.75 0 0 1 1 3.19V19h-2v-2.31a1.75 1.75 0 0 1 1-3.19z"/></g>' +
    '</svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'medsec-nb:plugin',
  description: 'Secure studies panel, audit view and .msec files for medsec-nb.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  optional: [ICommandPalette, IStatusBar, IDefaultFileBrowser],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    browser: IDefaultFileBrowser | null
  ) => {
    const { commands } = app;
    const model = new StudiesModel();
    const panel = new SecureStudiesPanel(model);
    panel.id = PANEL_ID;
    panel.title.icon = lockIcon;
    shell.add(panel, 'left', { rank: 600 });

    // live audit: the server emits every record as an event; refresh on each
    app.serviceManager.events.stream.connect((_, event) => {
      if (event.schema_id === AUDIT_SCHEMA) {
        void model.refresh();
        if (panel.isVisible) {
          void panel.newest();
        }
      }
    });

    const showPanel = () => shell.activateById(PANEL_ID);

    async function openInNotebook(path: string, form: OpenForm, target: OpenTarget): Promise<void> {
      const [dir] = splitPath(path);
      let nb: NotebookPanel | null = target === 'current' ? tracker.currentWidget : null;
      if (target === 'current' && !nb) {
        throw new Error('No current notebook: open one first, or use a new notebook');
      }
      if (!nb) {
        const created = await commands.execute('docmanager:new-untitled', { path: dir, type: 'notebook' });
        nb = (await commands.execute('docmanager:open', {
          path: created.path,
          factory: 'Notebook',
          kernel: { name: 'python3' }
        })) as NotebookPanel;
      }
      await nb.context.ready;
      const [nbDir] = splitPath(nb.context.path);
      const rel = PathExt.relative(nbDir || '.', path) || path;
      const source = loadStudyCell({ ...form.value, study: rel });
      const notebook = nb.content;
      const first = notebook.model?.cells.get(0);
      if (target === 'new' && first && !first.sharedModel.getSource()) {
        first.sharedModel.setSource(source);
        notebook.activeCellIndex = 0;
      } else {
        NotebookActions.insertBelow(notebook);
        notebook.activeCell?.model.sharedModel.setSource(source);
      }
      shell.activateById(nb.id);
    }

    app.docRegistry.addModelFactory(new HeaderOnlyModelFactory());
    app.docRegistry.addFileType({
      name: FILE_TYPE,
      displayName: 'Encrypted DICOM study',
      extensions: ['.msec'],
      mimeTypes: ['application/x-medsec'],
      contentType: 'file',
      fileFormat: null,
      icon: lockIcon
    });
    app.docRegistry.addWidgetFactory(new StudyViewFactory(openInNotebook));

    const selectedPath = (args: Record<string, unknown>): string | null => {
      if (typeof args.path === 'string') {
        return args.path;
      }
      const first = browser?.selectedItems().next();
      const value = first && !first.done ? first.value : null;
      return value && value.path.endsWith('.msec') ? value.path : null;
    };

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Show the Secure studies panel',
      caption: 'Studies decrypted in running kernels and the audit log',
      execute: showPanel
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh secure studies and audit log',
      execute: async () => {
        await model.refresh();
        await panel.reload();
      }
    });
    commands.addCommand(CommandIDs.verify, {
      label: 'Verify the audit chain',
      execute: async () => {
        showPanel();
        await panel.verify();
      }
    });
    commands.addCommand(CommandIDs.checkpoint, {
      label: 'Checkpoint the audit chain (sign its head)',
      execute: async () => {
        showPanel();
        await panel.checkpoint();
      }
    });
    commands.addCommand(CommandIDs.exportFhir, {
      label: 'Export the audit log as FHIR AuditEvents',
      execute: () => panel.exportAudit('fhir')
    });
    commands.addCommand(CommandIDs.exportDicom, {
      label: 'Export the audit log as DICOM audit messages',
      execute: () => panel.exportAudit('dicom')
    });
    commands.addCommand(CommandIDs.openStudy, {
      label: args => (args.path ? 'Open Secure Study in a Notebook…' : 'Open the selected secure study in a notebook…'),
      icon: lockIcon,
      execute: async args => {
        const path = selectedPath(args);
        if (!path) {
          await showErrorMessage('Open secure study', 'Select a .msec file in the file browser first.');
          return;
        }
        const form = new OpenForm(splitPath(path)[1]);
        const result = await showDialog({
          title: `Open ${splitPath(path)[1]}`,
          body: form,
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Open in a new notebook' })]
        });
        if (result.button.accept) {
          try {
            await openInNotebook(path, form, 'new');
          } catch (error) {
            await showErrorMessage('Open secure study', (error as Error).message);
          }
        }
      }
    });
    commands.addCommand(CommandIDs.inspect, {
      label: 'Inspect (public header)',
      caption: 'Show the public header of an encrypted study: no key needed, no patient data',
      execute: async args => {
        const path = selectedPath(args);
        if (!path) {
          await showErrorMessage('Inspect secure study', 'Select a .msec file in the file browser first.');
          return;
        }
        try {
          const body = new Widget({ node: headerNode(await fetchHeader(path)) });
          await showDialog({ title: `Public header of ${splitPath(path)[1]}`, body, buttons: [Dialog.okButton()] });
        } catch (error) {
          await showErrorMessage('Inspect secure study', (error as Error).message);
        }
      }
    });
    commands.addCommand(CommandIDs.closeStudy, {
      label: 'Close a decrypted study…',
      execute: async args => {
        let kernelId = args.kernelId as string | undefined;
        let studyId = args.studyId as string | undefined;
        if (!kernelId || !studyId) {
          await model.refresh();
          const choices = model.kernels.flatMap(k =>
            k.studies.map(s => ({ k, s, label: `${s.name} in ${k.notebook ?? k.kernel_id.slice(0, 8)} (${s.id.slice(0, 6)})` }))
          );
          if (!choices.length) {
            await showErrorMessage('Close a study', 'No study is decrypted in a running kernel.');
            return;
          }
          const picked = await InputDialog.getItem({ title: 'Close which study?', items: choices.map(c => c.label) });
          const choice = choices.find(c => c.label === picked.value);
          if (!picked.button.accept || !choice) {
            return;
          }
          kernelId = choice.k.kernel_id;
          studyId = choice.s.id;
        }
        await panel.closeStudy(kernelId, studyId);
      }
    });

    app.contextMenu.addItem({
      command: CommandIDs.openStudy,
      selector: `.jp-DirListing-item[data-file-type="${FILE_TYPE}"]`,
      rank: 1
    });
    app.contextMenu.addItem({
      command: CommandIDs.inspect,
      selector: `.jp-DirListing-item[data-file-type="${FILE_TYPE}"]`,
      rank: 2
    });

    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    if (statusBar) {
      const item = new StudyStatus(model, tracker, showPanel);
      statusBar.registerStatusItem('medsec-nb:status', { item, align: 'left', rank: 4 });
    }
  }
};

export default plugin;
