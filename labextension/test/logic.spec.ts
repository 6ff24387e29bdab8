import {
  IAuditRow,
  IKernelStudies,
  auditQuery,
  loadStudyCell,
  mergeNewest,
  shortTime,
  splitPath,
  tableTime,
  statusLabel,
  studyCount
} from '../src/logic';

const row = (seq: number): IAuditRow => ({
  seq,
  time: '2025-01-31T14:03:07.123456Z',
  user: 'u',
  action: 'open',
  outcome: 'success',
  purpose: 'EDU',
  study: null,
  instances: null,
  kernel_id: null
});

describe('auditQuery', () => {
  it('leaves out empty filters and trims values', () => {
    expect(auditQuery({ user: ' alice ', study: '', outcome: 'denied' })).toBe('user=alice&outcome=denied&limit=100');
  });
  it('adds the cursor and page size', () => {
    expect(auditQuery({}, 25, 4096)).toBe('limit=25&before=4096');
  });
  it('encodes values', () => {
    expect(auditQuery({ since: '2025-01-31T14:00+01:00' })).toBe('since=2025-01-31T14%3A00%2B01%3A00&limit=100');
  });
});

describe('studies in the current kernel', () => {
  const kernels: IKernelStudies[] = [
    { kernel_id: 'k1', name: 'python3', notebook: 'a.ipynb', studies: [] },
    {
      kernel_id: 'k2',
      name: 'python3',
      notebook: null,
      studies: [
        { id: 'a', name: 'x.msec', instances: 3, purpose: 'EDU', user: 'u', opened: 't' },
        { id: 'b', name: 'y.msec', instances: 3, purpose: 'EDU', user: 'u', opened: 't' }
      ]
    }
  ];
  it('counts per kernel', () => {
    expect(studyCount(kernels, 'k2')).toBe(2);
    expect(studyCount(kernels, 'k1')).toBe(0);
    expect(studyCount(kernels, undefined)).toBe(0);
  });
  it('labels the status-bar state', () => {
    expect(statusLabel(0)).toMatchObject({ state: 'none', text: 'No decrypted studies' });
    expect(statusLabel(1)).toMatchObject({ state: 'open', text: '1 decrypted study' });
    expect(statusLabel(2).text).toBe('2 decrypted studies');
  });
});

describe('audit table', () => {
  it('adds only newer rows on top', () => {
    expect(mergeNewest([row(5), row(4)], [row(7), row(6), row(5)]).map(r => r.seq)).toEqual([7, 6, 5, 4]);
    expect(mergeNewest([], [row(2), row(1)]).map(r => r.seq)).toEqual([2, 1]);
  });
  it('shortens record times', () => {
    expect(shortTime('2025-01-31T14:03:07.123456Z')).toBe('2025-01-31 14:03:07');
    expect(shortTime('odd')).toBe('odd');
    expect(tableTime('2025-01-31T14:03:07.123456Z')).toBe('01-31 14:03:07');
  });
});

describe('loadStudyCell', () => {
  it('writes the magic with identity and purpose', () => {
    expect(loadStudyCell({ study: 'ct demo.msec', purpose: 'EDU', identity: 'keys/me.key' })).toBe(
      '%load_ext medsec_nb\n%load_secure_study "ct demo.msec" --identity "keys/me.key" --purpose EDU'
    );
  });
  it('asks for the passphrase without an identity', () => {
    expect(loadStudyCell({ study: 's.msec', purpose: 'HRESCH', identity: ' ' })).toContain('--passphrase-prompt');
  });
  it('refuses a bad purpose or a path that could break out of the magic line', () => {
    expect(() => loadStudyCell({ study: 's.msec', purpose: 'EDU; rm', identity: '' })).toThrow(/purpose/);
    expect(() => loadStudyCell({ study: 's.msec', purpose: '', identity: '' })).toThrow(/purpose/);
    expect(() => loadStudyCell({ study: 'a"b.msec', purpose: 'EDU', identity: '' })).toThrow(/study/);
    expect(() => loadStudyCell({ study: 's.msec', purpose: 'EDU', identity: 'k\n!rm -rf /' })).toThrow(/identity/);
  });
  it('splits paths', () => {
    expect(splitPath('a/b/c.msec')).toEqual(['a/b', 'c.msec']);
    expect(splitPath('c.msec')).toEqual(['', 'c.msec']);
  });
});
