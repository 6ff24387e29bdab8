/**
 * The CT analysis notebook (notebooks/03_secure_ct_analysis.ipynb) in a real JupyterLab and chromium:
 * upload it, run every cell, and see the viewer draw the lung mask over the decrypted CT. The
 * screenshot goes to the test results (ignored by git); MEDSEC_SCREENSHOTS_DIR=$PWD/docs puts it in docs/.
 */
import { expect, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const SOURCE = path.resolve(__dirname, '..', '..', '..', 'notebooks', '03_secure_ct_analysis.ipynb');

/** The notebook as run here: a first cell sends this kernel's records to a log of its own (the panel
 * test expects the server's log to start empty); the notebook's own cells are unchanged. */
function notebookForThisTest(): string {
  const nb = JSON.parse(fs.readFileSync(SOURCE, 'utf-8'));
  nb.cells.unshift({
    cell_type: 'code',
    execution_count: null,
    id: 'medsec-ui-own-log',
    metadata: {},
    outputs: [],
    source:
      'import os, tempfile\n' +
      'os.environ["MEDSEC_AUDIT_LOG"] = os.path.join(tempfile.mkdtemp(prefix="medsec-ui-analysis-"), "audit.jsonl")'
  });
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'medsec-ui-')), '03_secure_ct_analysis.ipynb');
  fs.writeFileSync(file, JSON.stringify(nb));
  return file;
}
const NOTEBOOK = notebookForThisTest();
const SHOTS = process.env.MEDSEC_SCREENSHOTS_DIR || path.resolve(__dirname, '..', 'test-results', 'screenshots');

/** Index of the notebook's cell whose source contains ``text`` (the notebook renders cells lazily:
 * a cell far down exists in the page only once scrolled to, which Galata does by index). */
function cellIndex(text: string): number {
  const cells: { source: string | string[] }[] = JSON.parse(fs.readFileSync(NOTEBOOK, 'utf-8')).cells;
  const index = cells.findIndex(c => [c.source].flat().join('').includes(text));
  expect(index).toBeGreaterThanOrEqual(0);
  return index;
}

test('the analysis notebook runs top to bottom and shows the lungs over the CT', async ({ page, tmpPath }) => {
  const name = '03_secure_ct_analysis.ipynb';
  await page.contents.uploadFile(NOTEBOOK, `${tmpPath}/${name}`);
  await page.notebook.openByPath(`${tmpPath}/${name}`);
  await page.notebook.activate(name);
  // the last cell closes the study (the viewer goes blank): look at the viewer right after its cell runs
  const viewerCell = cellIndex('series.view(mask=mask');
  let checked: unknown = 'the viewer cell did not run';
  await page.notebook.runCellByCell({
    onAfterCellRun: async (index: number) => {
      if (index !== viewerCell) {
        return;
      }
      try {
        const viewer = (await page.notebook.getCellOutputLocator(index))!;
        await expect(viewer.locator('img')).toBeVisible({ timeout: 60000 });
        await expect(viewer).toContainText('right lung');
        await expect(viewer).toContainText('left lung');
        await viewer.screenshot({ path: path.join(SHOTS, 'analysis-lungs-overlay.png') });
        checked = null;
      } catch (error) {
        checked = error;
      }
    }
  });
  expect(checked).toBeNull();
  const last = (await page.notebook.getCellOutputLocator(cellIndex('%unload_secure_study ct')))!;
  await expect(last).toContainText('plaintext DICOM files written during this session: 0');
  await expect(page.locator('.jp-NotebookPanel [data-mime-type="application/vnd.jupyter.error"]')).toHaveCount(0);
});
