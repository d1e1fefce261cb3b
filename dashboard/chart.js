// A dependency-free SVG line chart: lineChart(container, series, format) draws each series' [time, value] points
// on shared axes and a legend under it.

const NS = 'http://www.w3.org/2000/svg';
export const COLORS = ['#58a6ff', '#3fb950', '#d29922', '#f85149', '#bc8cff', '#39c5cf', '#ff9bce', '#e3b341'];

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

export function lineChart(container, series, format = String) {
  const W = 800, H = 180, L = 50, R = 10, T = 10, B = 20;
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  const all = series.flatMap((s) => s.points);
  container.replaceChildren(svg);
  if (all.length === 0) {
    el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, svg).textContent = 'no samples yet';
    return;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(t0 + 1, ...all.map((p) => p[0]));
  const vmax = Math.max(1, ...all.map((p) => p[1])) * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / vmax) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (vmax * i) / 4;
    el('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#26303a' }, svg);
    el('text', { x: L - 4, y: y(v) + 3, 'text-anchor': 'end' }, svg).textContent = format(v);
  }
  el('text', { x: W - R, y: H - 4, 'text-anchor': 'end' }, svg).textContent =
    `last ${Math.round((t1 - t0) / 1000)} s`;
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    const color = s.color || COLORS[i % COLORS.length];
    el('path', { d, fill: 'none', stroke: color, 'stroke-width': 2 }, svg);
    const [lt, lv] = s.points[s.points.length - 1];
    el('circle', { cx: x(lt), cy: y(lv), r: 3, fill: color }, svg);
  });
  const legend = document.createElement('div');
  legend.className = 'legend';
  series.forEach((s, i) => {
    const item = document.createElement('span');
    item.textContent = `\u25A0 ${s.name}`;
    item.style.color = s.color || COLORS[i % COLORS.length];
    legend.appendChild(item);
  });
  container.appendChild(legend);
}
