"""A minimal OpenAI-compatible ``/v1/completions`` server for tests: greedy decoding of a local model with
``top_logprobs``, stopping at the end-of-sequence token (``finish_reason`` ``"stop"``, else ``"length"``), over real
HTTP on 127.0.0.1. Run as ``python -m tests.openai_server [port] [model folder]`` (prints its port; the micro model
when no folder is given)."""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from ltune.backbone import Backbone
from tests.conftest import micro_backbone


def serve(port: int = 0, model_dir: str | None = None) -> None:
    backbone = micro_backbone() if model_dir is None else Backbone(name_or_path=model_dir)
    model, tok = backbone.load_model().eval(), backbone.tokenizer

    def complete(prompt: str, max_tokens: int, k: int) -> dict:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        tokens, token_lps, tops, finish = [], [], [], "length"
        with torch.no_grad():
            for _ in range(max_tokens):
                lp = model(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
                top = lp.topk(min(k, lp.numel()))
                nxt = int(lp.argmax())
                stop = nxt == tok.eos_token_id  # its logprobs are reported, its text is not (as vLLM does)
                tokens.append("" if stop else tok.convert_ids_to_tokens(nxt))
                token_lps.append(float(lp[nxt]))
                tops.append({tok.convert_ids_to_tokens(int(i)): float(v) for v, i in zip(top.values, top.indices)})
                if stop:
                    finish = "stop"
                    break
                ids.append(nxt)
        return {
            "finish_reason": finish,
            "text": "".join(tokens),
            "logprobs": {
                "tokens": tokens,
                "token_logprobs": token_lps,
                "top_logprobs": tops,
                "text_offset": [0] * len(tokens),
            },
        }

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not self.path.endswith("/completions"):
                self.send_error(404)
                return
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = [
                {"index": i, **complete(p, body.get("max_tokens", 16), body.get("logprobs") or 0)}
                for i, p in enumerate(prompts)
            ]
            out = json.dumps(
                {
                    "id": "cmpl-test",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": choices,
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0, sys.argv[2] if len(sys.argv) > 2 else None)
