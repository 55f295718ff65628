// The player of a live picture (spectral_jax/inference/live_picture.py
// defines what it draws; keep the two in step). Plain JavaScript, WebGL2.
//
// Per frame the CPU computes one complex coefficient c_k per mode (the
// looping motion's magnify * w_k (exp(2 pi i k t / T) - 1) plus the pokes'
// magnify * q_k) and the GPU draws in three passes:
//   1. motion: the displacement Re sum_k S_k c_k on the volume's grid (the
//      sum is linear, so upsampling it afterwards equals summing the
//      upsampled modes, at a fraction of the texture reads);
//   2. splat: one point per picture pixel, moved by the bilinearly
//      upsampled displacement; the point covers the 4 pixels around, its
//      fragment shader weighs each by the bilinear weight times
//      exp(min(metric, 30)), and additive blending sums colour * weight and
//      weight in a float target one pixel larger on every side (so points
//      landing just outside still reach the edge pixels, as in softmax_splat);
//   3. resolve: colour = sum / weight, or the still picture where nothing
//      landed, into the canvas.
"use strict";

(() => {
  const payload = JSON.parse(document.getElementById("payload").textContent);
  const W = payload.width;
  const H = payload.height;
  const M = payload.numModes;
  const MAX_METRIC = 30.0;  // render/splat.py's MAX_METRIC
  const MARGIN = 1;  // pixels of the splat target beyond every edge
  const status = document.getElementById("status");
  const api = {ready: false, error: null};
  window.livePicture = api;

  function fail(message) {
    api.error = message;
    status.textContent = message;
  }

  function bytes(base64) {
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  function toBase64(array) {
    const view = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
    let text = "";
    for (let i = 0; i < view.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, view.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  const picture = bytes(payload.picture);  // [H][W][3] uint8
  const modesHalf = new Uint16Array(bytes(payload.modes).buffer);  // [M][h][w][4] float16
  const metricHalf = new Uint16Array(bytes(payload.metric).buffer);  // [H][W] float16
  const gw = payload.gridWidth;
  const gh = payload.gridHeight;
  // Grid pixels to output pixels, per axis (fit_spectral scales the same way).
  const unitScale = [W / gw, H / gh];

  // ---- Dynamics (inference/dynamics.py): unit-mass damped oscillators. ----
  const omega = payload.omega;
  const gamma = payload.gamma;
  const substeps = payload.substeps;
  const step = 1 / (payload.fps * substeps);  // seconds per Euler sub-step
  const q = new Float64Array(2 * M);  // (re, im) per mode
  const v = new Float64Array(2 * M);
  let carry = 0;  // simulated seconds not yet stepped
  let stepIndex = 0;  // sub-steps since the last replay of the pokes
  let scheduled = [];  // [sub-step index, kick (Float64Array 2M)] of replayed pokes

  // The 4 pixels around (x, y) on a width x height grid (centres at
  // integers; (x, y) clamped to it) and their bilinear weights, as
  // [[x, y, weight] x 4]. The top-left corner stays one short of the last
  // column and row, so that x = width - 1 is weight 1 on the last column.
  function corners(x, y, width, height) {
    x = Math.min(Math.max(x, 0), width - 1);
    y = Math.min(Math.max(y, 0), height - 1);
    const x0 = Math.min(Math.floor(x), Math.max(width - 2, 0));
    const y0 = Math.min(Math.floor(y), Math.max(height - 2, 0));
    const x1 = Math.min(x0 + 1, width - 1);
    const y1 = Math.min(y0 + 1, height - 1);
    const fx = x - x0;
    const fy = y - y0;
    return [[x0, y0, (1 - fx) * (1 - fy)], [x1, y0, fx * (1 - fy)],
            [x0, y1, (1 - fx) * fy], [x1, y1, fx * fy]];
  }

  // A mode shape at output pixel (x, y): the grid bilinearly upsampled to the
  // output size (half-pixel centres, edges clamped, as cv2.resize and the
  // motion pass do), then bilinear between output pixels (as
  // dynamics._bilinear); in output pixels. Returns Float64Array [M][4].
  function upsampledAt(ix, iy) {
    const out = new Float64Array(4 * M);
    for (const [cx, cy, weight] of corners((ix + 0.5) * gw / W - 0.5, (iy + 0.5) * gh / H - 0.5,
                                           gw, gh)) {
      for (let k = 0; k < M; k++) {
        const base = ((k * gh + cy) * gw + cx) * 4;
        for (let c = 0; c < 4; c++) {
          out[4 * k + c] += weight * halfToFloat(modesHalf[base + c]) * unitScale[c % 2];
        }
      }
    }
    return out;
  }

  function modeShapeAt(x, y) {
    const out = new Float64Array(4 * M);
    for (const [cx, cy, weight] of corners(x, y, W, H)) {
      const shape = upsampledAt(cx, cy);
      for (let i = 0; i < 4 * M; i++) out[i] += weight * shape[i];
    }
    return out;
  }

  // The largest modal amplitude sqrt(sum_k |S_k|^2) over the grid, output
  // pixels: a poke where the amplitude is ~0 of it moves nothing.
  const peakAmplitude = (() => {
    let peak = 0;
    for (let p = 0; p < gw * gh; p++) {
      let sum = 0;
      for (let k = 0; k < M; k++) {
        for (let c = 0; c < 4; c++) {
          sum += (halfToFloat(modesHalf[(k * gw * gh + p) * 4 + c]) * unitScale[c % 2]) ** 2;
        }
      }
      peak = Math.max(peak, sum);
    }
    return Math.sqrt(peak);
  })();

  // The velocity kick [2M] of a poke at (x, y) output pixels by (dx, dy):
  // the force conj(S_k(p)) . d on every mode, normalised by
  // sum_k |S_k(p)|^2 / omega_k (dynamics._modal_impulse), or null where
  // nothing moves.
  function kick(x, y, dx, dy) {
    const shape = modeShapeAt(x, y);  // (x, y) clamped to the picture
    let amplitude = 0;
    let norm = 0;
    for (let k = 0; k < M; k++) {
      let power = 0;
      for (let c = 0; c < 4; c++) power += shape[4 * k + c] ** 2;
      amplitude += power;
      norm += power / omega[k];
    }
    if (Math.sqrt(amplitude) <= 1e-6 * peakAmplitude) return null;
    const out = new Float64Array(2 * M);
    const scale = payload.strength / norm;
    for (let k = 0; k < M; k++) {
      const [reX, reY, imX, imY] = shape.subarray(4 * k, 4 * k + 4);
      out[2 * k] = scale * (reX * dx + reY * dy);
      out[2 * k + 1] = -scale * (imX * dx + imY * dy);
    }
    return out;
  }

  function addKick(velocityKick) {
    for (let i = 0; i < 2 * M; i++) v[i] += velocityKick[i];
  }

  // One forward Euler step of every mode: both updates from the old (q, v).
  function eulerStep() {
    for (const [index, velocityKick] of scheduled) {
      if (index === stepIndex) addKick(velocityKick);
    }
    for (let k = 0; k < M; k++) {
      for (let part = 0; part < 2; part++) {
        const i = 2 * k + part;
        const qi = q[i];
        q[i] += step * v[i];
        v[i] -= step * (gamma[k] * v[i] + omega[k] * omega[k] * qi);
      }
    }
    stepIndex++;
  }

  function resting() {
    if (scheduled.some(([index]) => index >= stepIndex)) return false;
    let energy = 0;
    for (let k = 0; k < M; k++) {
      energy += v[2 * k] ** 2 + v[2 * k + 1] ** 2
          + omega[k] ** 2 * (q[2 * k] ** 2 + q[2 * k + 1] ** 2);
    }
    return energy < 1e-14;
  }

  function calm() {
    q.fill(0);
    v.fill(0);
    scheduled = [];
    carry = 0;
  }

  function replayPokes() {
    calm();
    stepIndex = 0;
    for (const [x, y, dx, dy, frame] of payload.pokes) {
      const velocityKick = kick(x, y, dx, dy);
      if (velocityKick) scheduled.push([Math.round(frame * substeps), velocityKick]);
    }
  }

  // ---- Playback state ----
  let playing = payload.playing;
  let loopTime = 0;  // frames of the looping motion
  let magnify = payload.magnify;
  let speed = payload.speed;
  let still = false;
  let manualClock = false;

  function advance(seconds) {
    const simulated = Math.min(seconds, 0.25) * speed;  // a hidden tab skips, not floods
    if (playing) loopTime = (loopTime + simulated * payload.fps) % payload.loopFrames;
    if (resting()) {
      carry = 0;
      return;
    }
    carry += simulated;
    const steps = Math.floor(carry / step);
    carry -= steps * step;
    for (let i = 0; i < steps; i++) eulerStep();
  }

  function coefficients() {
    const out = new Float32Array(2 * M);
    for (let k = 0; k < M; k++) {
      const phase = 2 * Math.PI * (k + 1) * loopTime / payload.numFrames;
      const weight = payload.binWeights[k];
      out[2 * k] = magnify * (weight * (Math.cos(phase) - 1) + q[2 * k]);
      out[2 * k + 1] = magnify * (weight * Math.sin(phase) + q[2 * k + 1]);
    }
    return out;
  }

  // ---- WebGL2 ----
  const canvas = document.getElementById("view");
  canvas.width = W;
  canvas.height = H;
  document.title = payload.title;
  const gl = canvas.getContext("webgl2", {antialias: false, alpha: false, depth: false});
  if (!gl || !gl.getExtension("EXT_color_buffer_float")) {
    fail("This browser has no WebGL2 with float render targets, which this page needs.");
    return;
  }
  // Float32 sums need float blending; without it half floats, with weights
  // shifted by the largest metric so that they stay below 1 (the softmax
  // is the same; far weaker pixels may then count as nothing).
  const floatBlend = !!gl.getExtension("EXT_float_blend");
  let largestMetric = 0;
  for (let i = 0; i < metricHalf.length; i++) {
    largestMetric = Math.max(largestMetric, halfToFloat(metricHalf[i]));
  }
  const metricShift = floatBlend ? 0 : Math.min(largestMetric, MAX_METRIC);

  const MOTION_FRAGMENT = `#version 300 es
    precision highp float;
    uniform highp sampler2DArray modes;
    uniform vec2 coefficients[${M}];
    uniform vec2 unitScale;
    out vec4 motion;
    void main() {  // Re sum_k S_k c_k at a grid cell (texel rows from the top), output px
      ivec2 cell = ivec2(gl_FragCoord.xy);
      vec2 sum = vec2(0.0);
      for (int k = 0; k < ${M}; k++) {
        vec4 mode = texelFetch(modes, ivec3(cell, k), 0);
        sum += mode.xy * coefficients[k].x - mode.zw * coefficients[k].y;
      }
      motion = vec4(sum * unitScale, 0.0, 0.0);
    }`;

  const DISPLACEMENT = `
    uniform highp sampler2D motion;
    uniform vec2 outputSize;
    uniform vec2 gridSize;
    // The grid's displacement at output pixel p (centres at integers),
    // bilinear with half-pixel centres and clamped edges, as cv2.resize.
    vec2 displacementAt(vec2 pixel) {
      vec2 at = clamp((pixel + 0.5) * gridSize / outputSize - 0.5, vec2(0.0), gridSize - 1.0);
      ivec2 low = ivec2(floor(at));
      ivec2 high = min(low + 1, ivec2(gridSize) - 1);
      vec2 f = at - vec2(low);
      vec2 top = mix(texelFetch(motion, low, 0).xy, texelFetch(motion, ivec2(high.x, low.y), 0).xy,
                     f.x);
      vec2 bottom = mix(texelFetch(motion, ivec2(low.x, high.y), 0).xy,
                        texelFetch(motion, high, 0).xy, f.x);
      return mix(top, bottom, f.y);
    }`;

  const SPLAT_VERTEX = `#version 300 es
    precision highp float;
    precision highp int;
    ${DISPLACEMENT}
    uniform highp sampler2D picture;
    uniform highp sampler2D metric;
    uniform float metricShift;
    uniform vec2 targetSize;
    flat out vec2 target;
    flat out vec4 weighted;
    void main() {
      ivec2 source = ivec2(gl_VertexID % int(outputSize.x), gl_VertexID / int(outputSize.x));
      vec2 moved = displacementAt(vec2(source));
      target = vec2(source) + moved;
      float weight = exp(min(texelFetch(metric, source, 0).r, ${MAX_METRIC.toFixed(1)})
                         - metricShift);
      weighted = vec4(texelFetch(picture, source, 0).rgb * weight, weight);
      vec2 window = target + ${MARGIN.toFixed(1)} + 0.5;  // rows from the top
      gl_Position = vec4(window.x / targetSize.x * 2.0 - 1.0,
                         1.0 - window.y / targetSize.y * 2.0, 0.0, 1.0);
      if (any(isnan(moved)) || any(isinf(moved))) gl_Position = vec4(0.0, 0.0, 2.0, 1.0);
      gl_PointSize = 2.0;
    }`;

  const SPLAT_FRAGMENT = `#version 300 es
    precision highp float;
    uniform vec2 targetSize;
    flat in vec2 target;
    flat in vec4 weighted;
    out vec4 sum;
    void main() {
      vec2 pixel = vec2(gl_FragCoord.x, targetSize.y - gl_FragCoord.y)
                   - 0.5 - ${MARGIN.toFixed(1)};
      vec2 bilinear = max(1.0 - abs(pixel - target), 0.0);
      sum = weighted * (bilinear.x * bilinear.y);
    }`;

  const FULL_SCREEN = `#version 300 es
    void main() {  // one triangle over the viewport
      vec2 corner = vec2(float(gl_VertexID & 1), float(gl_VertexID >> 1)) * 4.0 - 1.0;
      gl_Position = vec4(corner, 0.0, 1.0);
    }`;

  const RESOLVE_FRAGMENT = `#version 300 es
    precision highp float;
    uniform highp sampler2D sums;
    uniform highp sampler2D picture;
    uniform vec2 outputSize;
    uniform bool still;
    out vec4 color;
    void main() {
      ivec2 pixel = ivec2(int(gl_FragCoord.x), int(outputSize.y) - 1 - int(gl_FragCoord.y));
      vec3 rgb = texelFetch(picture, pixel, 0).rgb;
      // The sums' texel rows count from the bottom of the margin-wide target.
      vec4 sum = texelFetch(sums, ivec2(pixel.x + ${MARGIN}, int(outputSize.y) - pixel.y), 0);
      if (!still && sum.a > 0.0) rgb = sum.rgb / sum.a;
      color = vec4(rgb, 1.0);
    }`;

  const FIELD_FRAGMENT = `#version 300 es
    precision highp float;
    ${DISPLACEMENT}
    out vec4 field;
    void main() {  // texel rows from the top, as the picture's
      field = vec4(displacementAt(floor(gl_FragCoord.xy)), 0.0, 0.0);
    }`;

  function program(vertex, fragment) {
    const linked = gl.createProgram();
    for (const [type, source] of [[gl.VERTEX_SHADER, vertex], [gl.FRAGMENT_SHADER, fragment]]) {
      const shader = gl.createShader(type);
      gl.shaderSource(shader, source);
      gl.compileShader(shader);
      if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
        throw new Error(`shader: ${gl.getShaderInfoLog(shader)}`);
      }
      gl.attachShader(linked, shader);
    }
    gl.linkProgram(linked);
    if (!gl.getProgramParameter(linked, gl.LINK_STATUS)) {
      throw new Error(`program: ${gl.getProgramInfoLog(linked)}`);
    }
    const uniforms = {};
    const count = gl.getProgramParameter(linked, gl.ACTIVE_UNIFORMS);
    for (let i = 0; i < count; i++) {
      const name = gl.getActiveUniform(linked, i).name.replace(/\[0\]$/, "");
      uniforms[name] = gl.getUniformLocation(linked, name);
    }
    return {linked, uniforms};
  }

  function texture(target, internalFormat, width, height, depth, format, type, data, filter) {
    const made = gl.createTexture();
    gl.bindTexture(target, made);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    if (target === gl.TEXTURE_2D_ARRAY) {
      gl.texImage3D(target, 0, internalFormat, width, height, depth, 0, format, type, data);
    } else {
      gl.texImage2D(target, 0, internalFormat, width, height, 0, format, type, data);
    }
    gl.texParameteri(target, gl.TEXTURE_MIN_FILTER, filter);
    gl.texParameteri(target, gl.TEXTURE_MAG_FILTER, filter);
    gl.texParameteri(target, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(target, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    return made;
  }

  function renderTarget(internalFormat, width, height) {
    const color = texture(gl.TEXTURE_2D, internalFormat, width, height, 1, gl.RGBA,
                          internalFormat === gl.RGBA32F ? gl.FLOAT : gl.HALF_FLOAT, null,
                          gl.NEAREST);
    const framebuffer = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, color, 0);
    if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) {
      throw new Error("a float render target is not supported here");
    }
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    return {color, framebuffer, width, height};
  }

  let motionPass;
  let motionTarget;
  let splat;
  let resolve;
  let field;
  let sums;
  let fieldTarget;
  const textures = {};
  try {
    motionPass = program(FULL_SCREEN, MOTION_FRAGMENT);
    splat = program(SPLAT_VERTEX, SPLAT_FRAGMENT);
    resolve = program(FULL_SCREEN, RESOLVE_FRAGMENT);
    field = program(FULL_SCREEN, FIELD_FRAGMENT);
    textures.picture = texture(gl.TEXTURE_2D, gl.RGB8, W, H, 1, gl.RGB, gl.UNSIGNED_BYTE,
                               picture, gl.NEAREST);
    textures.modes = texture(gl.TEXTURE_2D_ARRAY, gl.RGBA16F, gw, gh, M, gl.RGBA,
                             gl.HALF_FLOAT, modesHalf, gl.NEAREST);
    motionTarget = renderTarget(gl.RGBA32F, gw, gh);
    textures.metric = texture(gl.TEXTURE_2D, gl.R16F, W, H, 1, gl.RED, gl.HALF_FLOAT,
                              metricHalf, gl.NEAREST);
    sums = renderTarget(floatBlend ? gl.RGBA32F : gl.RGBA16F, W + 2 * MARGIN, H + 2 * MARGIN);
  } catch (error) {
    fail(`This page cannot draw here: ${error.message}`);
    return;
  }

  function bind(used, values) {
    gl.useProgram(used.linked);
    let unit = 0;
    for (const [name, value] of Object.entries(values)) {
      const location = used.uniforms[name];
      if (location === undefined) continue;
      if (value.texture) {
        gl.activeTexture(gl.TEXTURE0 + unit);
        gl.bindTexture(value.target, value.texture);
        gl.uniform1i(location, unit++);
      } else if (value.length) {  // vec2, or an array of them
        gl.uniform2fv(location, value);
      } else {
        gl.uniform1f(location, value);
      }
    }
  }

  // Pass 1: the displacement on the grid, into motionTarget.
  function updateMotion() {
    gl.bindFramebuffer(gl.FRAMEBUFFER, motionTarget.framebuffer);
    gl.viewport(0, 0, gw, gh);
    bind(motionPass, {
      modes: {texture: textures.modes, target: gl.TEXTURE_2D_ARRAY},
      coefficients: coefficients(), unitScale,
    });
    gl.drawArrays(gl.TRIANGLES, 0, 3);
  }

  function motionUniforms() {
    return {
      motion: {texture: motionTarget.color, target: gl.TEXTURE_2D},
      outputSize: [W, H], gridSize: [gw, gh],
    };
  }

  function draw() {
    if (!still) {
      updateMotion();
      gl.bindFramebuffer(gl.FRAMEBUFFER, sums.framebuffer);
      gl.viewport(0, 0, sums.width, sums.height);
      gl.clearColor(0, 0, 0, 0);
      gl.clear(gl.COLOR_BUFFER_BIT);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE);
      bind(splat, {
        ...motionUniforms(),
        picture: {texture: textures.picture, target: gl.TEXTURE_2D},
        metric: {texture: textures.metric, target: gl.TEXTURE_2D},
        metricShift, targetSize: [sums.width, sums.height],
      });
      gl.drawArrays(gl.POINTS, 0, W * H);
      gl.disable(gl.BLEND);
    }
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.viewport(0, 0, W, H);
    bind(resolve, {
      sums: {texture: sums.color, target: gl.TEXTURE_2D},
      picture: {texture: textures.picture, target: gl.TEXTURE_2D},
      outputSize: [W, H],
    });
    gl.uniform1i(resolve.uniforms.still, still ? 1 : 0);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
  }

  // ---- Controls ----
  const playButton = document.getElementById("play");
  const stillButton = document.getElementById("still");
  const magnifyInput = document.getElementById("magnify");
  const speedInput = document.getElementById("speed");
  function showControls() {
    playButton.textContent = playing ? "pause" : "play";
    stillButton.textContent = still ? "show motion" : "show still picture";
    magnifyInput.value = magnify;
    speedInput.value = speed;
    document.getElementById("magnify-value").textContent = `${magnify.toFixed(1)}x`;
    document.getElementById("speed-value").textContent = `${speed.toFixed(2)}x`;
  }
  playButton.addEventListener("click", () => { playing = !playing; showControls(); });
  stillButton.addEventListener("click", () => { still = !still; showControls(); });
  magnifyInput.addEventListener("input", () => { magnify = +magnifyInput.value; showControls(); });
  speedInput.addEventListener("input", () => { speed = +speedInput.value; showControls(); });
  document.getElementById("calm").addEventListener("click", calm);
  const replayButton = document.getElementById("replay");
  replayButton.hidden = payload.pokes.length === 0;
  replayButton.addEventListener("click", replayPokes);
  showControls();

  // ---- Pokes: press where to push, release where to push it to. ----
  const line = document.getElementById("arrow-line");
  let pressed = null;  // {x, y} picture pixels, {cssX, cssY}
  function pictureAt(event) {
    const box = canvas.getBoundingClientRect();
    const cssX = event.clientX - box.left;
    const cssY = event.clientY - box.top;
    // Pixel i spans [i, i + 1) of the picture; its centre is pixel coordinate i.
    return {x: cssX * W / box.width - 0.5, y: cssY * H / box.height - 0.5, cssX, cssY};
  }
  canvas.addEventListener("pointerdown", (event) => {
    pressed = pictureAt(event);
    canvas.setPointerCapture(event.pointerId);
    line.setAttribute("x1", pressed.cssX);
    line.setAttribute("y1", pressed.cssY);
    line.setAttribute("x2", pressed.cssX);
    line.setAttribute("y2", pressed.cssY);
    line.setAttribute("visibility", "visible");
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!pressed) return;
    const at = pictureAt(event);
    line.setAttribute("x2", at.cssX);
    line.setAttribute("y2", at.cssY);
  });
  function release(event, apply) {
    if (!pressed) return;
    const at = pictureAt(event);
    line.setAttribute("visibility", "hidden");
    const [x, y] = [pressed.x, pressed.y];
    pressed = null;
    if (apply && (at.x !== x || at.y !== y)) api.poke(x, y, at.x - x, at.y - y);
  }
  canvas.addEventListener("pointerup", (event) => release(event, true));
  canvas.addEventListener("pointercancel", (event) => release(event, false));

  // ---- What tests and scripts may call ----
  Object.assign(api, {
    width: W,
    height: H,
    substeps,
    lastPoke: null,
    // Pushes output pixel (x, y) by (dx, dy) pixels now, as a drag does.
    poke(x, y, dx, dy) {
      const velocityKick = kick(x, y, dx, dy);
      api.lastPoke = [x, y, dx, dy];
      if (!velocityKick) {
        status.textContent = "Nothing moves there.";
        return false;
      }
      status.textContent = "";
      addKick(velocityKick);
      return true;
    },
    // Stops the real-time clock: time moves only by advanceFrames.
    setManualClock(on) { manualClock = on; },
    // n frames of 1/fps s: exactly n * substeps Euler steps.
    advanceFrames(n) {
      for (let i = 0; i < n * substeps; i++) eulerStep();
      if (playing) loopTime = (loopTime + n) % payload.loopFrames;
    },
    setLoop(play, time) { playing = play; loopTime = time; showControls(); },
    setMagnify(value) { magnify = value; showControls(); },
    calm,
    replayPokes,
    modalCoordinates() { return Array.from(q); },
    // The canvas after drawing now: base64 RGBA8 [H][W][4], top row first.
    frame() {
      draw();
      const pixels = new Uint8Array(W * H * 4);
      gl.readPixels(0, 0, W, H, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
      const rows = new Uint8Array(W * H * 4);
      for (let y = 0; y < H; y++) {
        rows.set(pixels.subarray((H - 1 - y) * W * 4, (H - y) * W * 4), y * W * 4);
      }
      return toBase64(rows);
    },
    // Seconds per frame of n frames of the looping motion drawn back to back
    // (each waits for the GPU: one pixel is read back), for benchmarks.
    timeFrames(n) {
      const pixel = new Uint8Array(4);
      const start = performance.now();
      for (let i = 0; i < n; i++) {
        loopTime = (loopTime + 1) % payload.loopFrames;
        draw();
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
      }
      return (performance.now() - start) / 1000 / n;
    },
    // The displacement field drawn now: base64 float32 [H][W][4] (dx, dy, 0, 0).
    displacement() {
      updateMotion();
      fieldTarget = fieldTarget || renderTarget(gl.RGBA32F, W, H);
      gl.bindFramebuffer(gl.FRAMEBUFFER, fieldTarget.framebuffer);
      gl.viewport(0, 0, W, H);
      bind(field, motionUniforms());
      gl.drawArrays(gl.TRIANGLES, 0, 3);
      const values = new Float32Array(W * H * 4);
      gl.readPixels(0, 0, W, H, gl.RGBA, gl.FLOAT, values);
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      return toBase64(values);
    },
  });

  if (payload.pokes.length) replayPokes();
  let last = null;
  function animate(now) {
    if (!manualClock && last !== null) advance((now - last) / 1000);
    last = now;
    draw();
    requestAnimationFrame(animate);
  }
  api.ready = true;
  requestAnimationFrame(animate);
})();
