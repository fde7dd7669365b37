"""Basic accessibility and layout checks run inside the page (computed styles, DOM)."""

from __future__ import annotations

from typing import Any

A11Y_JS = r"""
() => {
  const problems = [];
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none';
  };
  if (!document.documentElement.getAttribute('lang')) problems.push('<html> has no lang');
  if (!document.title.trim()) problems.push('empty <title>');
  if (!document.querySelector('main')) problems.push('no <main>');
  // every form control has a label
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    const id = el.id;
    const labelled = (id && document.querySelector(`label[for="${CSS.escape(id)}"]`)) || el.closest('label')
      || (el.getAttribute('aria-label') || '').trim() || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push('form control without a label: ' + el.outerHTML.slice(0, 120));
  }
  // buttons and links have names
  for (const el of document.querySelectorAll('button, a[href]')) {
    const name = (el.textContent || '').trim() || el.getAttribute('aria-label') || el.getAttribute('title')
      || (el.querySelector('title') && el.querySelector('title').textContent.trim());
    if (!name) problems.push('unnamed ' + el.tagName.toLowerCase() + ': ' + el.outerHTML.slice(0, 120));
  }
  // exactly one h1, no skipped heading levels
  const h1 = document.querySelectorAll('h1');
  if (h1.length !== 1) problems.push(`expected one h1, found ${h1.length}`);
  let prev = 0;
  for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
    const level = Number(h.tagName[1]);
    if (prev && level > prev + 1) {
      problems.push(`heading level skips from h${prev} to h${level}: "${h.textContent.trim()}"`);
    }
    if (!prev && level !== 1) problems.push(`first heading is h${level}`);
    prev = level;
  }
  // images and SVGs have accessible names (decorative ones are aria-hidden)
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push('img without alt: ' + img.src);
  }
  for (const svg of document.querySelectorAll('svg')) {
    if (svg.closest('[aria-hidden="true"]')) continue;
    if (svg.parentElement && svg.parentElement.closest('svg')) continue;
    const ids = (svg.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean);
    const name = (svg.getAttribute('aria-label') || '') + ids.map((i) => {
      const n = document.getElementById(i); return n ? n.textContent : '';
    }).join(' ');
    if (!name.trim()) problems.push('svg without an accessible name: ' + svg.outerHTML.slice(0, 120));
    if (!svg.getAttribute('role')) problems.push('svg without a role');
  }
  // colour contrast of text vs its effective background (alpha layers composited on white)
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const bgOf = (el) => {
    const layers = [];
    for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let out = [255, 255, 255];
    for (const c of layers.reverse()) out = out.map((v, i) => c[i] * c[3] + v * (1 - c[3]));
    return out;
  };
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const contrastOf = (el) => {
    const fg = parse(getComputedStyle(el).color);
    const bg = bgOf(el);
    const fgc = fg.slice(0, 3).map((v, i) => v * fg[3] + bg[i] * (1 - fg[3]));
    return ratio(fgc, bg);
  };
  const bodyRatio = contrastOf(document.body);
  if (bodyRatio < 4.5) problems.push(`body text contrast ${bodyRatio.toFixed(2)} < 4.5`);
  const sel = 'p, li, td, th, dt, dd, label, a, button, legend, h1, h2, h3, .badge, .help, .muted, code, summary, '
    + 'figcaption';
  let checked = 0;
  for (const el of document.querySelectorAll(sel)) {
    if (checked > 600) break;
    if (!visible(el) || el.closest('svg') || !(el.textContent || '').trim()) continue;
    if (el.closest('.skip-link')) continue;
    checked++;
    const r = contrastOf(el);
    if (r < 4.5) {
      const what = el.tagName.toLowerCase() + (el.className ? '.' + el.className : '');
      problems.push(`low contrast ${r.toFixed(2)} for <${what}> "${el.textContent.trim().slice(0, 40)}"`);
    }
  }
  return {problems, bodyRatio, checked};
}
"""

NO_HSCROLL_JS = "() => [document.documentElement.scrollWidth, window.innerWidth]"


def check_a11y(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(A11Y_JS)
    assert not result["problems"], f"{page.url}: accessibility problems:\n" + "\n".join(result["problems"])
    assert result["bodyRatio"] >= 4.5
    return result


def check_phone_width(page: Any, name: str, shots: Any) -> None:
    """Render at 375 px: nothing may scroll sideways."""
    size = page.viewport_size
    page.set_viewport_size({"width": 375, "height": 812})
    try:
        scroll_w, inner_w = page.evaluate(NO_HSCROLL_JS)
        if shots is not None:
            page.screenshot(path=str(shots / f"{name}-375.png"), full_page=True)
        assert scroll_w <= inner_w, f"{page.url}: horizontal scroll at 375 px ({scroll_w} > {inner_w})"
    finally:
        page.set_viewport_size(size)
