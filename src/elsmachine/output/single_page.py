"""The single-image explore page: each output pixel's source pixel shown on the source image
(docs/single.md, "Where each pixel comes from"; the trace of experiments/single.py).

One self-contained HTML file (images and arrays inline, no request): the samples at the left, the
source image at the right. Hovering an output pixel outlines, on the source, the k x k patch its
dominant candidate came from at the selected step, with its weight and the effective number of
candidates; a slider (and the arrow keys) walks the finest scale's steps; a switch colours every
output pixel by its source offset, so verbatim copies show as flat regions.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import torch
from PIL import Image

from ..files import atomic_write
from .explore import page_path
from .images import to_uint8

__all__ = ["single_page"]


def _png(img: torch.Tensor) -> str:
    """[C, H, W] in [-1, 1] -> a PNG data URL."""
    arr = to_uint8(img[None])[0]
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>TITLE</title><style>
body{font:14px sans-serif;margin:16px;background:#fafafa}canvas{image-rendering:pixelated;border:1px solid #999}
.row{display:flex;gap:24px;align-items:flex-start}#info{font-family:monospace;min-height:3em}
</style></head><body><h2>TITLE</h2>
<div>sample <select id="pick"></select> step <input id="step" type="range" min="0" value="0"> <span id="tlab"></span>
<label><input id="offs" type="checkbox"> colour by source offset</label></div>
<div class="row"><div><div>output (x0_hat at the step; the last step is the image)</div><canvas id="out"></canvas></div>
<div><div>source</div><canvas id="src"></canvas></div></div><div id="info">hover an output pixel</div>
<script>
const D=/*DATA*/;
function dec(b,T){const s=atob(b),u=new Uint8Array(s.length);for(let i=0;i<s.length;i++)u[i]=s.charCodeAt(i);return new T(u.buffer);}
const SP=dec(D.source_pixel,Int32Array),WT=dec(D.weight,Uint8Array),EF=dec(D.effective,Float32Array);
const [S,B,H,W]=D.shape,[Hs,Ws]=D.source_shape,Z=Math.max(1,Math.floor(512/Math.max(W,Ws)));
const out=document.getElementById('out'),src=document.getElementById('src'),step=document.getElementById('step');
out.width=W*Z;out.height=H*Z;src.width=Ws*Z;src.height=Hs*Z;step.max=S-1;step.value=S-1;
const pick=document.getElementById('pick');D.seeds.forEach((s,i)=>{const o=document.createElement('option');o.value=i;o.text='seed '+s;pick.add(o)});
const imgs={};function img(u){if(!imgs[u]){imgs[u]=new Image();imgs[u].src=u;imgs[u].onload=draw;}return imgs[u];}
let hover=null;
function idx(s,b,i,j){return ((s*B+b)*H+i)*W+j;}
function draw(){const s=+step.value,b=+pick.value,co=out.getContext('2d'),cs=src.getContext('2d');
 co.imageSmoothingEnabled=false;cs.imageSmoothingEnabled=false;
 document.getElementById('tlab').textContent='t = '+D.ts[s].toFixed(3)+', k = '+D.patch_sizes[s];
 co.drawImage(img(D.x0_hat[s][b]),0,0,W*Z,H*Z);cs.drawImage(img(D.source),0,0,Ws*Z,Hs*Z);
 if(document.getElementById('offs').checked){const id=co.createImageData(W*Z,H*Z);
  for(let i=0;i<H;i++)for(let j=0;j<W;j++){const p=SP[idx(s,b,i,j)];let r=128,g=128,bl=128;
   if(p>=0){const di=Math.floor(p/Ws)-i,dj=p%Ws-j;const h=((di*73856093)^(dj*19349663))>>>0;r=h&255;g=(h>>8)&255;bl=(h>>16)&255;}
   for(let u=0;u<Z;u++)for(let v=0;v<Z;v++){const o=4*((i*Z+u)*W*Z+j*Z+v);id.data[o]=r;id.data[o+1]=g;id.data[o+2]=bl;id.data[o+3]=255;}}
  co.putImageData(id,0,0);}
 if(hover){const [i,j]=hover,p=SP[idx(s,b,i,j)],k=D.patch_sizes[s],h=Math.floor(k/2);
  co.strokeStyle='red';co.strokeRect(j*Z,i*Z,Z,Z);
  let txt='output ('+i+', '+j+')';
  if(p>=0){const pi=Math.floor(p/Ws),pj=p%Ws;cs.strokeStyle='red';cs.lineWidth=2;cs.strokeRect((pj-h)*Z,(pi-h)*Z,k*Z,k*Z);
   cs.fillStyle='red';cs.fillRect(pj*Z,pi*Z,Z,Z);
   txt+=' <- source ('+pi+', '+pj+'), offset ('+(pi-i)+', '+(pj-j)+'), weight '+(WT[idx(s,b,i,j)]/255).toFixed(2)+
   ', effective candidates '+EF[idx(s,b,i,j)].toFixed(1);} else txt+=': no dominant patch named';
  document.getElementById('info').textContent=txt;}}
out.onmousemove=e=>{const r=out.getBoundingClientRect();hover=[Math.min(H-1,Math.floor((e.clientY-r.top)/Z)),Math.min(W-1,Math.floor((e.clientX-r.left)/Z))];draw();};
step.oninput=draw;pick.onchange=draw;document.getElementById('offs').onchange=draw;
document.onkeydown=e=>{if(e.key==='ArrowLeft')step.value=Math.max(0,+step.value-1);else if(e.key==='ArrowRight')step.value=Math.min(S-1,+step.value+1);else return;draw();};
draw();
</script></body></html>"""


def single_page(out, trace, source: torch.Tensor, *, seeds, title: str = "els single") -> "Path":  # noqa: F821
    """Write the page for a :class:`~elsmachine.experiments.single.SingleTrace` over ``source``
    [C, Hs, Ws] to ``out`` (an .html name)."""
    out = page_path(out)
    S, B, H, W = trace.source_pixel.shape
    data = {
        "shape": [S, B, H, W], "source_shape": list(trace.source_shape), "seeds": [int(s) for s in seeds],
        "ts": trace.ts.tolist(), "patch_sizes": trace.patch_sizes.tolist(), "source": _png(source),
        "x0_hat": [[_png(trace.x0_hat[s, b]) for b in range(B)] for s in range(S)],
        "source_pixel": _b64(trace.source_pixel.numpy().astype(np.int32)),
        "weight": _b64(np.round(trace.weight.clamp(0, 1).numpy() * 255).astype(np.uint8)),
        "effective": _b64(trace.effective.numpy().astype(np.float32)),
    }
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return atomic_write(out, _PAGE.replace("/*DATA*/", blob).replace("TITLE", esc).encode("utf-8"))
