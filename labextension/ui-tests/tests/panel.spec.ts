/**
 * The Secure studies panel end to end, in a real JupyterLab and chromium: open the panel,
 * open a .msec from the file browser into a notebook, load it, see it listed and audited,
 * inspect its header, close it from the panel. Screenshots of the panel go to the test results
 * (ignored by git); MEDSEC_SCREENSHOTS_DIR=$PWD/docs refreshes the README's on request.
 */
import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';

const DEMO = path.resolve(__dirname, '..', 'demo');
const SHOTS = process.env.MEDSEC_SCREENSHOTS_DIR || path.resolve(__dirname, '..', 'test-results', 'screenshots');

test.use({ autoGoto: true });

test('open, list, audit, inspect and close a secure study', async ({ page, tmpPath }) => {
  await page.contents.uploadFile(path.join(DEMO, 'ct_demo.msec'), `${tmpPath}/ct_demo.msec`);
  await page.contents.uploadFile(path.join(DEMO, 'demo-analyst.key'), `${tmpPath}/demo-analyst.key`);

  // the panel, from the command palette's command
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('medsec-nb:open-panel'));
  const panel = page.locator('#medsec-nb\\:panel');
  await expect(panel).toBeVisible();
  await expect(panel.locator('.medsec-nb-chain')).toContainText('No audit records yet');

  // a .msec opens as its public header with the open form (the file itself is not loaded)
  await page.sidebar.openTab('filebrowser');
  await page.filebrowser.refresh();
  await expect(page.locator('.jp-DirListing-item[data-file-type="medsec-study"]')).toHaveCount(1);
  await page.filebrowser.open('ct_demo.msec');
  const view = page.locator('.medsec-nb-StudyView');
  await expect(view).toContainText('instances');
  await expect(view).toContainText('valid over header');
  await view.locator('input[name="identity"]').fill('demo-analyst.key');
  await view.getByRole('button', { name: 'Open in a new notebook' }).click();

  // the notebook has the cell ready; run it
  await expect(page.locator('.jp-NotebookPanel .jp-Cell').first()).toContainText('%load_secure_study');
  await page.notebook.runCell(0);
  await expect(page.locator('.jp-NotebookPanel .jp-Cell').first().locator('.jp-OutputArea')).toContainText(
    'ct_demo'
  );

  // listed in the panel, counted in the status bar, audited
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('medsec-nb:open-panel'));
  const study = panel.locator('.medsec-nb-study');
  await expect(study).toContainText('ct_demo.msec', { timeout: 15000 });
  await expect(study).toContainText('8 instances · EDU');
  await expect(page.locator('.medsec-nb-Status')).toHaveText('🔒 1 decrypted study');
  await expect(panel.locator('.medsec-nb-row', { hasText: 'open' }).first()).toContainText('success', {
    timeout: 15000
  });
  await panel.getByRole('button', { name: 'Verify chain' }).click();
  await expect(panel.locator('.medsec-nb-chain')).toContainText('Chain intact');
  await panel.screenshot({ path: path.join(SHOTS, 'lab-panel-light.png') });
  await page.theme.setDarkTheme();
  await panel.screenshot({ path: path.join(SHOTS, 'lab-panel-dark.png') });
  await page.theme.setLightTheme();

  // filter the audit table on the server
  await panel.locator('input[name="outcome"]').fill('denied');
  await panel.locator('input[name="outcome"]').press('Enter');
  await expect(panel.locator('.medsec-nb-row')).toHaveCount(0);
  await panel.locator('input[name="outcome"]').fill('');
  await panel.locator('input[name="outcome"]').press('Enter');
  await expect(panel.locator('.medsec-nb-row').first()).toBeVisible();

  // Inspect from the file browser's context menu
  await page.sidebar.openTab('filebrowser');
  await page.locator('.jp-DirListing-item[data-file-type="medsec-study"]').click({ button: 'right' });
  await page.getByRole('menuitem', { name: 'Inspect (public header)' }).click();
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText('recipients');
  await dialog.getByRole('button', { name: 'Ok' }).click();

  // close it from the panel: gone from the list, and from the kernel
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('medsec-nb:open-panel'));
  await study.getByRole('button', { name: 'Close ct_demo.msec' }).click();
  await expect(panel.locator('.medsec-nb-study')).toHaveCount(0);
  await expect(page.locator('.medsec-nb-Status')).toHaveText('🔒 No decrypted studies');
});
