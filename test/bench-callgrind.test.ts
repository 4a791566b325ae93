/**
 * Reading callgrind's output for bench/instructions.ts (bench/lib/callgrind.ts): JIT code named
 * by the perf map, each function's own instructions per request, and the totals of the simulated
 * cache and branch events, checked on a real valgrind run of node.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  COMPILER,
  countDiff,
  jitNamer,
  readCallerTree,
  readTotals,
  simulatedPer,
} from '../bench/lib/callgrind.js';
import { CALLGRIND_ANNOTATE, skipWithout, VALGRIND } from './helpers.js';

const TREE = `--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------

 3,000 ( 30.00%)  < ???:0x0000000000001010 (300x) [???]
   100 (  1.00%)  < ???:0x0000000000002000 (100x) [???]
 2,000 ( 20.00%)  *  ???:void node::Buffer::(anonymous namespace)::StringSlice<(node::encoding)4>(v8::FunctionCallbackInfo<v8::Value> const&) [/usr/bin/node]

 8,000 ( 80.00%)  < ???:Builtins_CallApiCallback (1x) [/usr/bin/node]
 4,000 ( 40.00%)  *  ???:0x0000000000001000 [???]

 1,200 ( 12.00%)  *  ???:v8::internal::compiler::GraphReducer::ReduceTop() [/usr/bin/node]

   800 (  8.00%)  *  ???:0x0000000000009000 [???]

   400 (  4.00%)  *  ./nptl/./nptl/pthread_rwlock_common.c:pthread_rwlock_unlock@@GLIBC_2.34
`;
const MAP =
  '1000 100 JS:*hot file:///repo/cache/hot.js:1:1\n2000 10 JS:^cold file:///repo/cache/cold.js:2:2\n';

test('jitNamer: an address inside a map range is that function, stripped of the prefix; others stay', () => {
  const name = jitNamer(MAP, 'file:///repo/cache/');
  assert.equal(name('???:0x0000000000001000'), 'JIT JS:*hot hot.js:1:1');
  assert.equal(name('???:0x00000000000010ff'), 'JIT JS:*hot hot.js:1:1');
  assert.equal(name('???:0x0000000000001100'), '???:0x0000000000001100', 'one past the range');
  assert.equal(name('???:0x0000000000002005'), 'JIT JS:^cold cold.js:2:2');
  assert.equal(name('???:Builtins_LoadIC'), '???:Builtins_LoadIC');
});

test('readCallerTree: own instructions (the `*` lines, not the callers) per request, TurboFan apart', () => {
  const c = readCallerTree(TREE, jitNamer(MAP, 'file:///repo/cache/'), 400);
  assert.equal(c.requests, 400);
  assert.equal(c.byFunction.get('JIT JS:*hot hot.js:1:1'), 10);
  assert.equal(c.byFunction.get('???:0x0000000000009000'), 2, 'unnamed code is kept under its address');
  assert.equal(c.byFunction.get('???:0x0000000000001010'), undefined, 'a caller line is not its own cost');
  assert.equal(c.compiler, 3);
  assert.equal(
    c.byFunction.get('./nptl/./nptl/pthread_rwlock_common.c:pthread_rwlock_unlock@@GLIBC_2.34'),
    1,
    'a function printed without its object',
  );
  assert.equal(c.total, (2000 + 4000 + 800 + 400) / 400, 'TurboFan is not in the total');
});

const SIM_REPORT = `--------------------------------------------------------------------------------
Profile data file 'callgrind.out.1' (creator: callgrind-3.19.0)
Events recorded:  Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim
--------------------------------------------------------------------------------

Ir                   Dr                   Dw                   I1mr                D1mr               D1mw               ILmr           DLmr            DLmw             Bc                   Bcm                Bi                 Bim
--------------------------------------------------------------------------------
764,691,008 (100.0%) 204,209,225 (100.0%) 120,657,996 (100.0%) 14,621,421 (100.0%) 5,628,871 (100.0%) 1,521,277 (100.0%) 9,548 (100.0%) 17,368 (100.0%) 130,426 (100.0%) 133,049,345 (100.0%) 5,632,264 (100.0%) 4,406,470 (100.0%) 725,442 (100.0%)  PROGRAM TOTALS

Ir                   Dr                   file:function
`;

test('readTotals and simulatedPer: the PROGRAM TOTALS under their event names, misses per request', () => {
  const totals = readTotals(SIM_REPORT);
  assert.equal(totals.get('Ir'), 764_691_008);
  assert.equal(totals.get('Bim'), 725_442);
  assert.equal(totals.size, 13);
  const s = simulatedPer(totals, 1000);
  assert.deepEqual(s, {
    l1Data: (5_628_871 + 1_521_277) / 1000,
    l1Instructions: 14_621_421 / 1000,
    lastLevel: (9_548 + 17_368 + 130_426) / 1000,
    mispredicts: (5_632_264 + 725_442) / 1000,
  });
  const irOnly = readTotals(
    'Ir                   \n---\n1,000 (100.0%)  PROGRAM TOTALS\n\nIr  file:function\n',
  );
  assert.deepEqual([...irOnly], [['Ir', 1000]]);
  assert.equal(simulatedPer(irOnly, 10), undefined, 'no simulation: nothing to report');
  assert.throws(() => readTotals('Ir\n'), /no PROGRAM TOTALS/);
  assert.throws(() => readTotals('Ir Dr\n1 (100.0%)  PROGRAM TOTALS'), /2 events \(Ir Dr\) but 1 totals/);
});

test('countDiff: biggest difference first, TurboFan left out', () => {
  const a = {
    byFunction: new Map([
      ['f', 10],
      ['g', 5],
      ['compiler::X', 100],
    ]),
    total: 15,
    compiler: 100,
    requests: 1,
  };
  const b = {
    byFunction: new Map([
      ['f', 11],
      ['h', 4],
    ]),
    total: 15,
    compiler: 0,
    requests: 1,
  };
  assert.deepEqual(
    countDiff(a, b).map((r) => r.fn),
    ['g', 'h', 'f'],
  );
  assert.ok(COMPILER.test('v8::internal::compiler::GraphReducer::ReduceTop()'));
});

test('a real callgrind run of node, caches simulated: the JIT code named, every instruction counted, misses read', {
  skip: skipWithout(VALGRIND, CALLGRIND_ANNOTATE),
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tcpserver-callgrind-test-'));
  try {
    const calls = 3000;
    // A named hot function (perf-map names mark the code's tier before the name: ~ ^ +' *) calling Buffer#toString('latin1') (StringSlice<latin1>) `calls` times.
    const script = `const b = Buffer.from('PING'); let n = 0; function hot(i) { n += b.toString('latin1').length + i; } for (let i = 0; i < ${calls}; i++) hot(i); console.log(n);`;
    const out = join(dir, 'cg.out');
    execFileSync(
      'valgrind',
      [
        '--tool=callgrind',
        '--smc-check=all-non-file',
        '--cache-sim=yes',
        '--branch-sim=yes',
        `--callgrind-out-file=${out}`,
        process.execPath,
        '--perf-basic-prof',
        // Each interpreted function gets its own copy of the interpreter's entry, named in the map,
        // so `hot` is named whichever tier runs it when callgrind looks (see below).
        '--interpreted-frames-native-stack',
        '-e',
        script,
      ],
      { cwd: dir, stdio: 'ignore', timeout: 240_000 },
    );
    const annotate = (args: string[]): string =>
      execFileSync('callgrind_annotate', [...args, out], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
    // As bench/instructions.ts reads a `--cache-sim` dump: instructions only in the tree.
    const tree = annotate(['--tree=caller', '--show=Ir', '--threshold=100']);
    const maps = readdirSync('/tmp').filter((f) => /^perf-\d+\.map$/.test(f));
    const pid = /\(PID (\d+)/.exec(tree)?.[1];
    assert.ok(pid !== undefined && maps.includes(`perf-${pid}.map`), 'the perf map of the profiled node');
    const perfMap = `/tmp/perf-${pid}.map`;
    const c = readCallerTree(tree, jitNamer(readFileSync(perfMap, 'utf8')), calls);
    rmSync(perfMap, { force: true });
    const slice = [...c.byFunction].find(([f]) => f.includes('StringSlice<(node::encoding)4>'));
    assert.ok(slice !== undefined && slice[1] > 0, 'the latin1 slice the loop calls, by its C++ name');
    // JIT code is named from the real perf map. Without the interpreter's per-function entries,
    // which JIT code the loop's instructions land on was callgrind's attribution: on Node 24 it
    // often folds code entered by a jump into the builtin that jumped (see bench/README.md), and a
    // run could name no function at all. With them, `hot` is named at some tier on Node 20 and 24.
    const hot = [...c.byFunction].filter(([f]) => /^JIT JS:[~^+'*]*hot \[eval\]:1:\d+$/.test(f));
    assert.ok(
      hot.some(([, n]) => n > 0),
      `\`hot\` named by the perf map among ${c.byFunction.size} functions`,
    );
    const totals = readTotals(annotate(['--threshold=1']));
    const s = simulatedPer(totals, c.requests);
    assert.ok(s !== undefined, 'the simulated events are in the report');
    for (const [k, v] of Object.entries(s)) assert.ok(Number.isFinite(v) && v > 0, `${k}: ${v}`);
    assert.ok(totals.get('Bcm')! <= totals.get('Bc')!, 'mispredicted branches are some of the branches');
    assert.ok(totals.get('D1mr')! <= totals.get('Dr')!, 'L1 read misses are some of the reads');
    const own = (c.total + c.compiler) * c.requests;
    assert.ok(Math.abs(totals.get('Ir')! - own) <= 1e-6 * own, "every instruction is some function's own");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
