// Time-series charts as SVG: one line per variation, no library.
import { html } from './vendor/preact-htm.mjs';

export const palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#ca8a04'];

const W = 460;
const H = 150;
const PAD = { left: 48, right: 8, top: 10, bottom: 22 };

function clock(t) {
  const d = new Date(t * 1000);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/**
 * series: [{name, points: [{t, v}]}] (v may be null: a gap); format: value → text; max: the
 * highest value the quantity can take, if any.
 */
export function LineChart({ title, series, format, from, to, max: limit }) {
  const values = series.flatMap((s) => s.points.map((p) => p.v)).filter((v) => v !== null && Number.isFinite(v));
  const max = values.length ? Math.max(...values) : 0;
  // Headroom above the highest value, but never past what the quantity can be (a rate: 1).
  const top = max > 0 ? Math.min(max * 1.1, limit ?? Infinity) : 1;
  const x = (t) => PAD.left + ((t - from) / Math.max(1, to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const lines = series.map((s, k) => {
    // A run of known values is one polyline; an unknown value breaks it.
    const runs = [];
    let run = [];
    for (const p of s.points) {
      if (p.v === null || !Number.isFinite(p.v)) {
        if (run.length) runs.push(run);
        run = [];
      } else run.push(`${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    }
    if (run.length) runs.push(run);
    const color = palette[k % palette.length];
    return runs.map((r) =>
      r.length === 1
        ? html`<circle cx=${r[0].split(',')[0]} cy=${r[0].split(',')[1]} r="2" fill=${color} />`
        : html`<polyline points=${r.join(' ')} fill="none" stroke=${color} stroke-width="1.5" />`
    );
  });
  return html`<figure class="chart" data-chart=${title}>
    <figcaption>${title}</figcaption>
    <svg viewBox="0 0 ${W} ${H}" role="img" aria-label=${title}>
      <line x1=${PAD.left} y1=${H - PAD.bottom} x2=${W - PAD.right} y2=${H - PAD.bottom} class="axis" />
      <line x1=${PAD.left} y1=${PAD.top} x2=${PAD.left} y2=${H - PAD.bottom} class="axis" />
      <text x=${PAD.left - 4} y=${PAD.top + 8} text-anchor="end" class="tick">${format(top)}</text>
      <text x=${PAD.left - 4} y=${H - PAD.bottom} text-anchor="end" class="tick">0</text>
      <text x=${PAD.left} y=${H - 6} class="tick">${clock(from)}</text>
      <text x=${W - PAD.right} y=${H - 6} text-anchor="end" class="tick">${clock(to)}</text>
      ${values.length ? lines : html`<text x=${W / 2} y=${H / 2} text-anchor="middle" class="tick">no data in this window</text>`}
    </svg>
  </figure>`;
}

export function Legend({ names }) {
  return html`<ul class="legend">
    ${names.map((n, k) => html`<li><svg width="12" height="12"><rect width="12" height="12" fill=${palette[k % palette.length]} /></svg> ${n}</li>`)}
  </ul>`;
}
