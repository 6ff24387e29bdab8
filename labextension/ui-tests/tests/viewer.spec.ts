/**
 * The slice viewer in a real JupyterLab and chromium: load the demo study, draw a label mask over
 * it with `series.view(mask=...)`, read the value under the pointer, switch to the coronal plane.
 * Screenshots go to the test results (ignored by git); MEDSEC_SCREENSHOTS_DIR=$PWD/docs refreshes
 * docs/viewer-overlay.png on request.
 */
import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';

const DEMO = path.resolve(__dirname, '..', 'demo');
const SHOTS = process.env.MEDSEC_SCREENSHOTS_DIR || path.resolve(__dirname, '..', 'test-results', 'screenshots');

// this kernel's records go to a log of its own: the panel test expects the server's log to start empty
const LOAD = [
  'import os, tempfile',
  'os.environ["MEDSEC_AUDIT_LOG"] = os.path.join(tempfile.mkdtemp(prefix="medsec-ui-viewer-"), "audit.jsonl")',
  '%load_ext medsec_nb',
  '%load_secure_study ct_demo.msec --identity demo-analyst.key --purpose EDU --as ct'
].join('\n');

const VIEW = [
  'import numpy as np',
  'series = ct.series[0]',
  'vol = series.volume(progress=False)',
  'mask = np.zeros(vol.shape, np.uint8)',
  'mask[vol > 250] = 1',
  'mask[vol < -400] = 2',
  'viewer = series.view(mask=mask, labels={1: "dense", 2: "air"}, preset="soft tissue")',
  'viewer'
].join('\n');

test('the viewer draws a label overlay, orientation labels, a scale bar and the value under the pointer', async ({
  page,
  tmpPath
}) => {
  await page.contents.uploadFile(path.join(DEMO, 'ct_demo.msec'), `${tmpPath}/ct_demo.msec`);
  await page.contents.uploadFile(path.join(DEMO, 'demo-analyst.key'), `${tmpPath}/demo-analyst.key`);
  await page.notebook.createNew('viewer.ipynb');
  await page.notebook.setCell(0, 'code', LOAD);
  await page.notebook.runCell(0);
  if ((await page.notebook.getCellCount()) < 2) {
    await page.notebook.addCell('code', VIEW);
  } else {
    await page.notebook.setCell(1, 'code', VIEW); // running cell 0 may have added an empty one
  }
  await page.notebook.runCell(1);

  const output = page.locator('.jp-NotebookPanel .jp-Cell').nth(1).locator('.jp-OutputArea');
  const image = output.locator('img');
  await expect(image).toBeVisible({ timeout: 30000 });
  await expect(output).toContainText('slice 4/8');
  await expect(output).toContainText('mm');
  await expect(output).toContainText('dense');
  for (const letter of ['A', 'P', 'R', 'L']) {
    await expect(output.locator('.widget-label', { hasText: new RegExp(`^${letter}$`) })).toHaveCount(1);
  }

  // ipyevents sends the pointer position; the kernel answers with the value under it
  await output.scrollIntoViewIfNeeded(); // a scroll during the screenshot would move the image from under the pointer
  const box = await image.boundingBox();
  expect(box).not.toBeNull();
  await page.mouse.move(box!.x + box!.width / 2, box!.y + box!.height / 2);
  await expect(output).toContainText(/HU at row \d+, column \d+/, { timeout: 15000 });
  await output.screenshot({ path: path.join(SHOTS, 'viewer-overlay.png') });

  // the coronal plane: the volume decrypted once, head at the top
  await output.locator('select').nth(1).selectOption({ label: 'coronal' });
  await expect(output).toContainText('slice 128/256', { timeout: 15000 });
  await expect(output.locator('.widget-label', { hasText: /^S$/ })).toHaveCount(1);
  await output.screenshot({ path: path.join(SHOTS, 'viewer-coronal.png') });
});
