"""Precision: correct PyTorch code gets no warning and no error (notes are fine).

Each cell is a pattern people write every day: the minimal cells below, and the cells of
`corpus_tutorials.py`, written the way official tutorials and popular notebooks write them.
A diagnostic here would teach users to ignore the report, so every one of them must stay quiet.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import report_of
from corpus_tutorials import TUTORIAL_CELLS

SETUP = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\ntorch.manual_seed(0)\n"

CLEAN: dict[str, str] = {
    "training loop: zero_grad, backward, step": """
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
X, Y = torch.randn(16, 4), torch.randn(16, 1)
losses = []
for step in range(5):
    opt.zero_grad()
    loss = F.mse_loss(model(X), Y)
    loss.backward()
    opt.step()
    losses.append(loss.item())
""",
    "zero_grad after step, and a running loss of numbers": """
model = nn.Linear(3, 1)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
running = 0.0
for step in range(4):
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    running += loss.item()
""",
    "parameter updates in place under no_grad": """
w = torch.randn(3, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
x, y = torch.randn(10, 3), torch.randn(10)
lr = 0.1
for i in range(5):
    loss = ((x @ w + b - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        w -= lr * w.grad
        b -= lr * b.grad
        w.grad.zero_()
        b.grad.zero_()
""",
    "manual update with grad = None": """
w = torch.randn(3, requires_grad=True)
for i in range(3):
    loss = (w ** 2).sum()
    loss.backward()
    with torch.no_grad():
        w.sub_(0.1 * w.grad)
    w.grad = None
""",
    "BatchNorm running statistics and ReLU(inplace=True)": """
model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True), nn.Linear(8, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
X, Y = torch.randn(32, 4), torch.randn(32, 1)
for step in range(3):
    opt.zero_grad()
    loss = F.mse_loss(model(X), Y)
    loss.backward()
    opt.step()
model.eval()
with torch.no_grad():
    pred = model(X)
""",
    "functional relu in place after a linear layer": """
lin = nn.Linear(4, 4)
x = torch.randn(2, 4)
h = lin(x)
h = F.relu(h, inplace=True)
h.sum().backward()
""",
    "DCGAN step: detach for D, then G, two D backwards": """
netG = nn.Sequential(nn.Linear(2, 8), nn.ReLU(True), nn.Linear(8, 4), nn.Tanh())
netD = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2, inplace=True), nn.Linear(8, 1), nn.Sigmoid())
criterion = nn.BCELoss()
optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
real = torch.randn(8, 4)
for i in range(3):
    netD.zero_grad()
    label = torch.full((8, 1), 1.0)
    output = netD(real)
    errD_real = criterion(output, label)
    errD_real.backward()
    D_x = output.mean().item()
    noise = torch.randn(8, 2)
    fake = netG(noise)
    label.fill_(0.0)
    output = netD(fake.detach())
    errD_fake = criterion(output, label)
    errD_fake.backward()
    D_G_z1 = output.mean().item()
    errD = errD_real + errD_fake
    optimizerD.step()
    netG.zero_grad()
    label.fill_(1.0)
    output = netD(fake)
    errG = criterion(output, label)
    errG.backward()
    D_G_z2 = output.mean().item()
    optimizerG.step()
""",
    "GAN discriminator step alone": """
G = nn.Linear(2, 4)
D = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())
optD = torch.optim.SGD(D.parameters(), lr=0.1)
fake = G(torch.randn(8, 2))
optD.zero_grad()
loss_d = F.binary_cross_entropy(D(fake.detach()), torch.zeros(8, 1))
loss_d.backward()
optD.step()
""",
    "clone before in-place edits": """
x = torch.randn(3, requires_grad=True)
y = x * 2
z = y.clone()
z[0] = 0
loss = (z * y).sum()
loss.backward()
a = x.detach().clone()
a += 1
t = torch.tensor([1, 2, 3, 4])
u = t.clone()
u[0] = 5
""",
    "double backward with create_graph=True": """
x = torch.tensor([1.0, 2.0], requires_grad=True)
y = (x ** 3).sum()
g, = torch.autograd.grad(y, x, create_graph=True)
g.sum().backward()
print(x.grad)
""",
    "second derivative through backward(create_graph=True)": """
x = torch.tensor(2.0, requires_grad=True)
y = x ** 3
y.backward(create_graph=True)
dx = x.grad
x.grad = None
dx.backward()
print(x.grad)
""",
    "torch.autograd.grad": """
x = torch.randn(3, requires_grad=True)
y = (x.sin() * x).sum()
(gx,) = torch.autograd.grad(y, x)
jac = torch.autograd.functional.jacobian(lambda v: v ** 2, torch.randn(3))
""",
    "gradient accumulation on purpose, one step": """
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
X, Y = torch.randn(16, 4), torch.randn(16, 1)
opt.zero_grad()
for k in range(4):
    loss = F.mse_loss(model(X[4 * k:4 * k + 4]), Y[4 * k:4 * k + 4]) / 4
    loss.backward()
opt.step()
""",
    "two backwards with retain_graph": """
x = torch.randn(3, requires_grad=True)
y = (x ** 2).sum()
y.backward(retain_graph=True)
first = x.grad.clone()
x.grad = None
y.backward()
""",
    "DQN-style detached target": """
q = nn.Linear(4, 2)
opt = torch.optim.SGD(q.parameters(), lr=0.01)
s, s2, r = torch.randn(8, 4), torch.randn(8, 4), torch.randn(8)
with torch.no_grad():
    target = r + 0.9 * q(s2).max(1).values
loss = F.smooth_l1_loss(q(s).max(1).values, target)
opt.zero_grad()
loss.backward()
opt.step()
""",
    "truncated BPTT: hidden state detached each step": """
cell = nn.RNNCell(3, 5)
opt = torch.optim.SGD(cell.parameters(), lr=0.01)
h = torch.zeros(2, 5)
for t in range(4):
    h = cell(torch.randn(2, 3), h)
    loss = h.pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    h = h.detach()
""",
    "logging and plotting values after backward": """
w = torch.randn(5, requires_grad=True)
loss = (w ** 2).sum()
loss.backward()
history = w.detach().clone().numpy()
values = w.detach().tolist()
grads = w.grad.numpy()
print(loss.item(), values)
""",
    "evaluation under no_grad and inference_mode": """
model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
model.eval()
with torch.no_grad():
    probs = model(torch.randn(5, 4))
with torch.inference_mode():
    probs2 = model(torch.randn(5, 4))
top = probs.argmax(1).tolist()
""",
    "numpy interop without grad": """
import numpy as np
a = np.arange(6.0).reshape(2, 3)
t = torch.from_numpy(a)
s = t.sum().item()
back = t.numpy()
""",
    "requires_grad set on leaves": """
x = torch.tensor([5.])
x.requires_grad = True
y = torch.rand(3).requires_grad_()
w = torch.randn(3, dtype=torch.float64).requires_grad_(True)
z = (x * y).sum() + w.sum()
z.backward()
print(x.grad, y.grad, w.grad)
""",
    "retain_grad on an intermediate": """
x = torch.randn(3, requires_grad=True)
h = x * 2
h.retain_grad()
h.sum().backward()
print(h.grad)
""",
    "custom autograd.Function": """
class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad

x = torch.randn(4, requires_grad=True)
Square.apply(x).sum().backward()
""",
    "weight init under no_grad and parameter copy": """
model = nn.Linear(3, 3)
with torch.no_grad():
    model.weight.fill_(0.5)
    model.bias.zero_()
    model.weight[0, 0] = 1.0
target = nn.Linear(3, 3)
target.load_state_dict(model.state_dict())
out = target(torch.randn(2, 3)).sum()
out.backward()
""",
    "running average of a loss as a float": """
w = torch.randn(3, requires_grad=True)
avg = 0.0
for i in range(4):
    loss = (w * i).pow(2).sum()
    loss.backward()
    avg = 0.9 * avg + 0.1 * loss.item()
    w.grad = None
""",
    "a loss summed over batches, one backward per epoch": """
w = torch.randn(3, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.01)
for epoch in range(3):
    total = 0
    for k in range(3):
        total = total + (w * k).sum()
    opt.zero_grad()
    total.backward()
    opt.step()
""",
    "manual SGD over a list of parameters": """
w = torch.randn(3, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
params = [w, b]
for step in range(3):
    loss = (w.sum() + b).pow(2).sum()
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= 0.1 * p.grad
            p.grad.zero_()
""",
    "out= and in-place ops on fresh tensors": """
a, b = torch.randn(3), torch.randn(3)
out = torch.empty(3)
torch.add(a, b, out=out)
buf = torch.zeros(4)
buf[1:3] = 1.0
buf.mul_(2)
""",
    "classifier with AdamW, clipping, accuracy and validation": """
model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
X, Y = torch.randn(64, 4, 4), torch.randint(0, 4, (64,))
history = {"loss": [], "acc": []}
for epoch in range(2):
    model.train()
    for i in range(0, 64, 16):
        xb, yb = X[i:i + 16], Y[i:i + 16]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history["loss"].append(loss.item())
        history["acc"].append((logits.argmax(1) == yb).float().mean().item())
    model.eval()
    with torch.no_grad():
        val = F.cross_entropy(model(X), Y).item()
""",
    "LSTM with its hidden state detached each step": """
lstm = nn.LSTM(3, 5, batch_first=True)
head = nn.Linear(5, 1)
opt = torch.optim.SGD(list(lstm.parameters()) + list(head.parameters()), lr=0.1)
hidden = None
for step in range(4):
    x = torch.randn(2, 6, 3)
    out, hidden = lstm(x, hidden)
    hidden = tuple(h.detach() for h in hidden)
    loss = head(out[:, -1]).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
""",
    "VAE with the reparameterisation trick": """
class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(8, 4)
        self.dec = nn.Linear(2, 8)
    def forward(self, x):
        h = self.enc(x)
        mu, logvar = h.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn_like(std)
        return torch.sigmoid(self.dec(z)), mu, logvar
vae = VAE()
opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
data = torch.rand(16, 8)
for i in range(3):
    recon, mu, logvar = vae(data)
    bce = F.binary_cross_entropy(recon, data, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    loss = bce + kld
    opt.zero_grad()
    loss.backward()
    opt.step()
""",
    "frozen backbone, trainable head": """
backbone = nn.Linear(8, 8)
head = nn.Linear(8, 2)
for p in backbone.parameters():
    p.requires_grad_(False)
opt = torch.optim.SGD(head.parameters(), lr=0.1)
x, y = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
for i in range(3):
    feats = backbone(x)
    loss = nn.functional.cross_entropy(head(feats), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
""",
    "module.apply init and parameters_to_vector": """
def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        m.bias.data.fill_(0.01)
net = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
net.apply(init_weights)
vec = nn.utils.parameters_to_vector(net.parameters())
out = net(torch.randn(3, 4)).sum()
out.backward()
grads = [p.grad.norm().item() for p in net.parameters()]
""",
    "plotting a function and its derivative": """
x = torch.linspace(-2, 2, 50, requires_grad=True)
y = torch.tanh(x)
y.backward(torch.ones_like(y))
import numpy as np
xs = x.detach().numpy()
ys = y.detach().numpy()
gs = x.grad.numpy()
""",
    "hand-written gradient descent zeroing .grad in place": """
w = torch.zeros(2, requires_grad=True)
X = torch.randn(20, 2); t = X @ torch.tensor([1.5, -2.0])
for step in range(5):
    pred = X @ w
    loss = ((pred - t) ** 2).mean()
    if w.grad is not None:
        w.grad.zero_()
    loss.backward()
    with torch.no_grad():
        w.add_(w.grad, alpha=-0.1)
print(w)
""",
    "clone then edit, masked writes on plain tensors": """
a = torch.randn(3, requires_grad=True)
b = a.clone()
b[0] = 0.0
c = b.exp()
c.sum().backward()
x = torch.randn(4, 4)
x.fill_diagonal_(0)
x[x < 0] = 0
x.clamp_(max=1.0)
""",
    "tied embedding and output weights": """
emb = nn.Embedding(10, 4)
out_layer = nn.Linear(4, 10, bias=False)
out_layer.weight = emb.weight
idx = torch.tensor([1, 2, 3])
logits = out_layer(emb(idx))
loss = nn.functional.cross_entropy(logits, idx)
loss.backward()
""",
}


@pytest.fixture()
def clean_shell(ip: Any) -> Any:
    ip.run_cell(SETUP, store_history=False)
    return ip


CORPUS: dict[str, str] = {**CLEAN, **TUTORIAL_CELLS}

CAPTURE_FAILURES: dict[str, str] = {}  # cells that fail only because of capture: none today


def corpus_ids() -> list[Any]:
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=CAPTURE_FAILURES[name]))
            if name in CAPTURE_FAILURES else name for name in CORPUS]


def test_the_corpus_has_at_least_a_hundred_cells() -> None:
    assert len(CORPUS) >= 100 and set(CAPTURE_FAILURES) <= set(CORPUS)


@pytest.mark.parametrize("name", corpus_ids())
def test_correct_code_gets_no_warning_or_error(clean_shell: Any, name: str) -> None:
    report, cell = report_of(clean_shell, CORPUS[name].strip("\n") + "\n")
    assert cell.error is None, cell.error
    loud = [(d.kind, d.severity, d.line, d.code, d.message) for d in report.diagnostics if d.severity != "note"]
    assert loud == []


def test_rerunning_a_training_cell_with_zero_grad_stays_clean(clean_shell: Any) -> None:
    body = CLEAN["training loop: zero_grad, backward, step"].strip("\n") + "\n"
    for _ in range(2):
        report, cell = report_of(clean_shell, body)
        assert cell.error is None
        assert [d.kind for d in report.diagnostics if d.severity != "note"] == []
