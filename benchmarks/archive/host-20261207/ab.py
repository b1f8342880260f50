"""bench_host's methodology (pool + memo, zero_grad, loader apart) on whichever tree is imported."""
import json, statistics, time, sys, torch
from steph.synthetic.models import TINY as MODEL, tiny_model
from steph.training.batching import load_chunks
from steph.training.loop import FitSettings, backward_chunks
from steph.training.memo import bag_memo
from steph.models.dispatch import DispatchCounter
try:
    from steph.training.loop import label_spec
except ImportError:
    label_spec = None
torch.set_num_threads(1)
DIM=16
def measure(model, n, steps=150):
    g = torch.Generator().manual_seed(n)
    budget = 1 << 20; settings = FitSettings(epochs=1)
    kw = {"label_spec": label_spec(model, settings)} if label_spec else {}
    total = n * 4
    bags = [torch.randn(k, DIM, generator=g) for k in torch.randint(8, 41, (total,), generator=g).tolist()]
    bins, events = torch.randint(0, 32, (total,), generator=g), torch.arange(total) % 2
    warm = [list(range(i*n, (i+1)*n)) for i in range(4)]
    cpu, loader = [], []
    model.train()
    with bag_memo(total):
        for step in range(4 + steps):
            batch = warm[step] if step < 4 else torch.randperm(total, generator=g)[:n].tolist()
            idx = torch.tensor(batch); loaded = [bags[i] for i in batch]
            model.zero_grad(set_to_none=True)
            c0 = time.thread_time()
            parts = load_chunks(loaded, bins[idx], events[idx], budget, True, True, budget, batch, **kw)
            c1 = time.thread_time()
            backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=budget)
            if step >= 4:
                cpu.append(time.thread_time() - c1); loader.append(c1 - c0)
        model.zero_grad(set_to_none=True)
        with DispatchCounter() as counter:
            backward_chunks(model, parts, settings, device=torch.device("cpu"), budget=budget)
    return [round(statistics.median(cpu)/n*1e6,1), round(statistics.median(loader)/n*1e6,1), counter.count]
out = {}
for name in ("train-source", "steph", "roupkt", "adamerging"):
    m = tiny_model(name, DIM, MODEL, options={"top_k": 2})
    out[name] = {n: measure(m, n) for n in (16, 64)}
print(json.dumps(out))
