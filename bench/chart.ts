/**
 * Draws bench/results/latest.json (or the file given as the first argument) as an SVG bar chart of
 * the framework / baseline ratio of every figure that has a ratio target (and, in grey beside it,
 * the framework / pull-floor ratio where the floor ran), with the 0.95 and 1.05 target lines, using Apache ECharts' server-side SVG renderer. Output: bench/results/chart.svg
 * (or the second argument).
 *
 * Run: `npx tsx bench/chart.ts [results.json] [chart.svg]`
 *
 * @module
 */

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as echarts from 'echarts';
import { ROOT } from './lib/proc.js';
import type { FigureResult } from './lib/results.js';

interface ResultsFile {
  meta: { date: string; node: string; cpu: string; runs: number; mode: string };
  figures: FigureResult[];
}

const input = path.resolve(process.argv[2] ?? path.join(ROOT, 'bench/results/latest.json'));
const output = path.resolve(process.argv[3] ?? path.join(ROOT, 'bench/results/chart.svg'));
const { meta, figures } = JSON.parse(readFileSync(input, 'utf8')) as ResultsFile;

const bars = figures.filter(
  (f) => f.ratio !== null && (f.target?.kind === 'ratioMax' || f.target?.kind === 'ratioMin'),
);
// ECharts draws the first category at the bottom of a vertical category axis; reverse for reading order.
const rows = [...bars].reverse();
const labels = rows.map((f) => `${f.workload} · ${f.figure}`);
const data = rows.map((f) => ({
  value: Number(f.ratio!.toFixed(3)),
  itemStyle: { color: f.pass ? '#3b8e5a' : '#c8453b' },
  label: {
    show: true,
    position: 'right' as const,
    formatter: `${f.ratio!.toFixed(3)}  (${f.target!.kind === 'ratioMax' ? '≤' : '≥'} ${
      f.target!.kind === 'ratioMax' ? f.target!.max : f.target!.kind === 'ratioMin' ? f.target!.min : ''
    })`,
    fontSize: 11,
  },
}));

const floorData = rows.map((f) =>
  f.floorRatio === null
    ? null
    : {
        value: Number(f.floorRatio.toFixed(3)),
        label: { show: true, position: 'right' as const, formatter: f.floorRatio.toFixed(3), fontSize: 10 },
      },
);

const width = 960;
const height = 140 + rows.length * 34;
const maxRatio = Math.max(1.3, ...rows.map((f) => Math.max(f.ratio!, f.floorRatio ?? 0) + 0.1));

const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width, height });
chart.setOption({
  animation: false,
  backgroundColor: '#ffffff',
  title: {
    text: 'tcpserver / raw node:net (median ratio; green = target met)',
    subtext: `${meta.mode} run, ${meta.runs} runs each, node ${meta.node}, ${meta.cpu}, ${meta.date.slice(0, 10)}`,
    left: 'center',
    textStyle: { fontSize: 15 },
    subtextStyle: { fontSize: 11 },
  },
  legend: { top: 48, data: ['tcpserver / raw node:net', 'tcpserver / pull floor'] },
  grid: { left: 300, right: 140, top: 80, bottom: 30 },
  xAxis: {
    type: 'value',
    min: 0,
    max: Number(maxRatio.toFixed(1)),
    splitLine: { lineStyle: { color: '#eee' } },
  },
  yAxis: { type: 'category', data: labels, axisLabel: { fontSize: 11 } },
  series: [
    {
      name: 'tcpserver / raw node:net',
      type: 'bar',
      data,
      barMaxWidth: 14,
      itemStyle: { color: '#3b8e5a' },
      markLine: {
        symbol: 'none',
        silent: true,
        label: { formatter: '{c}', position: 'end' },
        data: [
          { xAxis: 0.95, lineStyle: { color: '#555', type: 'dashed' } },
          { xAxis: 1.0, lineStyle: { color: '#bbb', type: 'solid' } },
          { xAxis: 1.05, lineStyle: { color: '#555', type: 'dashed' } },
        ],
      },
    },
    {
      name: 'tcpserver / pull floor',
      type: 'bar',
      data: floorData,
      barMaxWidth: 10,
      itemStyle: { color: '#9aa0b0' },
    },
  ],
});
writeFileSync(output, chart.renderToSVGString());
chart.dispose();
console.log(`wrote ${path.relative(process.cwd(), output)} (${rows.length} bars)`);
