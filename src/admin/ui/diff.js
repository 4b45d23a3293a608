// Line diffs for the review steps, an AI config's versions and the audit log.

/** JSON text with sorted keys, two-space indents: the same value always reads the same. */
export function pretty(value) {
  const sort = (v) => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])]));
    }
    return v;
  };
  return value === undefined || value === null ? '' : JSON.stringify(sort(value), null, 2);
}

/** The lines of `a` and `b` as [op, text]: op is ' ' (both), '-' (only a) or '+' (only b). */
export function lineDiff(a, b) {
  const x = a === '' ? [] : a.split('\n');
  const y = b === '' ? [] : b.split('\n');
  // Longest common subsequence, by dynamic programming: documents here are small.
  const n = x.length;
  const m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) {
      out.push([' ', x[i]]);
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push(['-', x[i++]]);
    } else {
      out.push(['+', y[j++]]);
    }
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

/** Only the changed lines and `context` lines around each; a gap is ['…', '']. */
export function trimmed(diff, context = 3) {
  const keep = diff.map(() => false);
  diff.forEach(([op], k) => {
    if (op !== ' ') for (let d = -context; d <= context; d++) if (diff[k + d]) keep[k + d] = true;
  });
  const out = [];
  let gap = false;
  diff.forEach((line, k) => {
    if (keep[k]) {
      out.push(line);
      gap = false;
    } else if (!gap) {
      out.push(['…', '']);
      gap = true;
    }
  });
  return out;
}
