// branchrec compliance console: the player (waveform lanes from server-side peaks,
// play/pause/seek/speed) and downloads. No framework, no inline code (strict CSP).
"use strict";
(function () {
  const csrf = () => {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  };
  async function grant(id, purpose, reason, format) {
    const r = await fetch(`/api/v1/recordings/${encodeURIComponent(id)}/grants`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(format ? { purpose, reason, format } : { purpose, reason }),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
    return j;
  }
  function draw(canvas, peaks) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, mid = h / 2;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = getComputedStyle(canvas).color || "#2a6";
    const n = peaks.length || 1;
    for (let i = 0; i < peaks.length; i++) {
      const x = Math.floor((i * w) / n);
      const bw = Math.max(1, Math.ceil(w / n));
      const lo = peaks[i][0], hi = peaks[i][1];
      const y0 = mid - hi * mid, y1 = mid - lo * mid;
      ctx.fillRect(x, y0, bw, Math.max(1, y1 - y0));
    }
    canvas.dataset.drawn = String(peaks.length);
  }
  const fmt = (t) => {
    if (!isFinite(t)) return "0:00";
    const m = Math.floor(t / 60), s = Math.floor(t % 60);
    return `${m}:${String(s).padStart(2, "0")}`;
  };
  function player(sec) {
    const id = sec.dataset.recording;
    const err = document.getElementById("player-error");
    const reasonEl = document.getElementById("reason");
    const needReason = sec.dataset.reasonRequired === "true";
    const audio = document.getElementById("audio");
    const show = (m) => { err.textContent = m; err.hidden = false; };
    const reason = () => {
      const r = (reasonEl.value || "").trim();
      if (needReason && !r) { show("State a reason (case id or free text) first."); return null; }
      err.hidden = true;
      return r;
    };
    const open = document.getElementById("open-player");
    if (open) open.addEventListener("click", async () => {
      const r = reason();
      if (r === null) return;
      open.disabled = true;
      try {
        const g = await grant(id, "play", r);
        document.getElementById("lanes").hidden = false;
        document.getElementById("controls").hidden = false;
        document.querySelectorAll("canvas.wave").forEach((c) => {
          const lane = Number(c.dataset.lane);
          if (g.peaks[lane]) draw(c, g.peaks[lane]);
        });
        sec.dataset.duration = String(g.duration_s);
        audio.src = g.url;
        audio.load();
      } catch (e) { show(e.message); open.disabled = false; }
    });
    const play = document.getElementById("play");
    play.addEventListener("click", () => { if (audio.paused) audio.play(); else audio.pause(); });
    audio.addEventListener("play", () => { play.textContent = "Pause"; });
    audio.addEventListener("pause", () => { play.textContent = "Play"; });
    const seek = document.getElementById("seek");
    const head = document.getElementById("playhead");
    audio.addEventListener("timeupdate", () => {
      const d = audio.duration || Number(sec.dataset.duration) || 1;
      const f = Math.min(1, audio.currentTime / d);
      seek.value = String(Math.round(f * 1000));
      head.style.left = `${(f * 100).toFixed(2)}%`;
      document.getElementById("time").textContent = `${fmt(audio.currentTime)} / ${fmt(d)}`;
    });
    seek.addEventListener("input", () => {
      const d = audio.duration || Number(sec.dataset.duration) || 0;
      audio.currentTime = (Number(seek.value) / 1000) * d;
    });
    document.getElementById("speed").addEventListener("change", (e) => {
      audio.playbackRate = Number(e.target.value);
    });
    const download = (elId, format, ext) => {
      const dl = document.getElementById(elId);
      if (dl) dl.addEventListener("click", async () => {
        const r = reason();
        if (r === null) return;
        try {
          const g = await grant(id, "download", r, format);
          const a = document.createElement("a");
          a.href = g.url;
          a.download = `${id}.${ext}`;
          document.body.appendChild(a);
          a.click();
          a.remove();
        } catch (e) { show(e.message); }
      });
    };
    download("download", null, "wav");
    download("download-opus", "opus", "opus");
    download("download-evidence", "evidence", "tar");
  }
  document.addEventListener("DOMContentLoaded", () => {
    const sec = document.getElementById("player");
    if (sec) player(sec);
  });
})();
