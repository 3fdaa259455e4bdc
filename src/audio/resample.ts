/**
 * Band-limited resampling (J. O. Smith's "bandlimited interpolation", as in libresample): every
 * output sample is a dot product of the input with a windowed-sinc kernel centred on its exact
 * position in the input, so any ratio works, rational or not.
 */

/** Kernel half-width in zero crossings: with the window below, ~1.4 kHz transition band at 16 kHz. */
const ZERO_CROSSINGS = 32;
/** Table points per zero crossing; linear interpolation between them errs by ~1e-6 (-110 dB). */
const DENSITY = 512;
/** Kaiser beta 9 gives ~90 dB stopband, below 16-bit noise, at a moderate transition width. */
const KAISER_BETA = 9;
/**
 * Cutoff as a fraction of the lower Nyquist frequency. Below 1 so the transition band mostly sits
 * under Nyquist: downsampling folds back only a sliver just under it, and the passband stays flat
 * to ~0.86 of Nyquist (speech energy up there is tiny).
 */
const ROLLOFF = 0.95;

const TABLE_END = ZERO_CROSSINGS * DENSITY;

interface KernelTable {
  /** h[i] = kernel at i / DENSITY zero crossings from the centre, i = 0..TABLE_END (h[TABLE_END] = 0). */
  h: Float32Array;
  /** dh[i] = h[i + 1] - h[i], so interpolation is one multiply-add. */
  dh: Float32Array;
}

let table: KernelTable | undefined;

function besselI0(x: number): number {
  const q = (x * x) / 4;
  let sum = 1;
  let term = 1;
  for (let k = 1; term > sum * 1e-17; k++) {
    term *= q / (k * k);
    sum += term;
  }
  return sum;
}

/** The kernel is cutoff-independent in zero-crossing units, so one table serves every ratio. */
function kernelTable(): KernelTable {
  if (table) return table;
  const h = new Float32Array(TABLE_END + 1);
  const norm = besselI0(KAISER_BETA);
  h[0] = 1;
  for (let i = 1; i < TABLE_END; i++) {
    const u = i / DENSITY;
    const r = u / ZERO_CROSSINGS;
    const window = besselI0(KAISER_BETA * Math.sqrt(1 - r * r)) / norm;
    h[i] = (Math.sin(Math.PI * u) / (Math.PI * u)) * window;
  }
  const dh = new Float32Array(TABLE_END);
  for (let i = 0; i < TABLE_END; i++) dh[i] = h[i + 1]! - h[i]!;
  table = { h, dh };
  return table;
}

/** Largest precomputed polyphase bank (coefficients); past it taps are computed per sample. */
const MAX_BANK = 1 << 20;

export function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * Writes the 2 * wing taps for an output sample `frac` past input sample k, weighting inputs
 * k - wing + 1 .. k + wing. Taps beyond the kernel's reach are 0.
 */
function fillTaps(coef: Float32Array, offset: number, frac: number, wing: number, fc: number): void {
  const { h, dh } = kernelTable();
  const tableStep = fc * DENSITY;
  for (let m = 0; m < 2 * wing; m++) {
    const pos = Math.abs(m - wing + 1 - frac) * tableStep;
    const p = pos | 0;
    coef[offset + m] = pos < TABLE_END ? (h[p]! + (pos - p) * dh[p]!) * fc : 0;
  }
}

/** Cutoff relative to the input Nyquist. */
const cutoff = (fromRate: number, toRate: number) => ROLLOFF * Math.min(1, toRate / fromRate);

/** Input samples either side of an output sample that the kernel reaches (a streaming resampler's delay). */
export function kernelWing(fromRate: number, toRate: number): number {
  return Math.ceil(ZERO_CROSSINGS / cutoff(fromRate, toRate));
}

/**
 * Resamples `input` from `fromRate` to `toRate` Hz. The output has
 * `Math.round(input.length * toRate / fromRate)` samples; output sample i sits at input position
 * `i * fromRate / toRate` (both start at t = 0), and input samples outside the array count as 0.
 * Equal rates return a copy.
 */
export function resample(input: Float32Array, fromRate: number, toRate: number): Float32Array {
  if (!(fromRate > 0 && toRate > 0 && Number.isFinite(fromRate) && Number.isFinite(toRate))) {
    throw new RangeError(`resample: rates must be positive and finite (got ${fromRate} -> ${toRate})`);
  }
  if (fromRate === toRate) return input.slice();

  const n = input.length;
  const out = new Float32Array(Math.round((n * toRate) / fromRate));
  // Cutoff relative to the input Nyquist. Stretching the kernel by 1/fc when downsampling makes it
  // anti-alias; scaling it by fc keeps its sum (the DC gain) at 1 either way.
  const fc = cutoff(fromRate, toRate);
  const wing = kernelWing(fromRate, toRate);
  const taps = 2 * wing;

  // Integer rates repeat their sub-sample offsets every `phases` outputs (L/M = toRate/fromRate in
  // lowest terms): the taps for each offset are computed once, leaving a plain dot product per sample.
  const g = Number.isInteger(fromRate) && Number.isInteger(toRate) ? gcd(fromRate, toRate) : 0;
  const phases = g > 0 ? toRate / g : Infinity;
  const advance = g > 0 ? fromRate / g : 0;
  const banked = phases * taps <= MAX_BANK;
  let bank: Float32Array;
  if (banked) {
    bank = new Float32Array(phases * taps);
    for (let ph = 0; ph < phases; ph++) fillTaps(bank, ph * taps, ((ph * advance) % phases) / phases, wing, fc);
  } else {
    bank = new Float32Array(taps);
  }

  const step = fromRate / toRate;
  for (let i = 0, ph = 0, base = 0; i < out.length; i++) {
    let k: number;
    let row = 0;
    if (banked) {
      k = base + Math.floor((ph * advance) / phases);
      row = ph * taps;
      if (++ph === phases) {
        ph = 0;
        base += advance;
      }
    } else {
      const t = i * step;
      k = Math.floor(t);
      fillTaps(bank, 0, t - k, wing, fc);
    }
    const lo = k - wing + 1;
    const m0 = Math.max(0, -lo);
    const m1 = Math.min(taps, n - lo);
    // Four accumulators break the add dependency chain (about 2x faster in V8).
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    let x = lo + m0;
    let c = row + m0;
    const end = lo + m1;
    for (; x + 3 < end; x += 4, c += 4) {
      a0 += input[x]! * bank[c]!;
      a1 += input[x + 1]! * bank[c + 1]!;
      a2 += input[x + 2]! * bank[c + 2]!;
      a3 += input[x + 3]! * bank[c + 3]!;
    }
    for (; x < end; x++, c++) a0 += input[x]! * bank[c]!;
    out[i] = a0 + a1 + a2 + a3;
  }
  return out;
}
