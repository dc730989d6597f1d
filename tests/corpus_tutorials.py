"""Clean-corpus cells written the way official PyTorch tutorials and popular notebooks write them.

Each value is one notebook cell; `test_clean_corpus.py` runs them under ``%%autograd`` after its SETUP
(torch, nn, F, a fixed seed) and fails on any warning or error diagnostic. Small sizes keep them fast.
"""

from __future__ import annotations

TUTORIAL_CELLS: dict[str, str] = {
    # -- the NumPy bridge (tensor tutorial) ----------------------------------------------------------------
    "numpy bridge: from_numpy then np.add out=": """
import numpy as np
a = np.ones(5)
b = torch.from_numpy(a)
np.add(a, 1, out=a)
print(f"a: {a}")
print(f"b: {b}")
""",
    "numpy bridge: numpy() then add_ on the tensor": """
t = torch.ones(5)
print(f"t: {t}")
n = t.numpy()
print(f"n: {n}")
t.add_(1)
print(f"t: {t}")
print(f"n: {n}")
""",
    "numpy bridge: as_tensor shares, tensor copies": """
import numpy as np
arr = np.arange(4, dtype=np.float32)
shared = torch.as_tensor(arr)
copied = torch.tensor(arr)
shared.mul_(2)
print(arr, copied)
""",
    "numpy bridge: detach().numpy() of predictions for plotting": """
x = torch.linspace(-1, 1, 20).unsqueeze(1)
model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
pred = model(x)
pred_np = pred.detach().numpy()
xs = x.squeeze().numpy()
print(pred_np.shape, xs.shape)
""",
    "numpy bridge: from_numpy(...).float() into a model": """
import numpy as np
data = np.random.rand(8, 3)
inputs = torch.from_numpy(data).float()
model = nn.Linear(3, 1)
loss = model(inputs).pow(2).mean()
loss.backward()
""",
    "numpy bridge: np.asarray of a tensor and back": """
import numpy as np
t = torch.arange(6.).reshape(2, 3)
a = np.asarray(t)
back = torch.from_numpy(a)
print(a.sum(), back.shape)
""",
    "numpy bridge: cpu().numpy() after training for metrics": """
model = nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
X, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
for _ in range(3):
    opt.zero_grad()
    loss = F.cross_entropy(model(X), y)
    loss.backward()
    opt.step()
with torch.no_grad():
    preds = model(X).argmax(1).cpu().numpy()
acc = (preds == y.numpy()).mean()
""",
    # -- out= ------------------------------------------------------------------------------------------------
    "out=: matmul into a preallocated tensor": """
a = torch.randn(2, 2)
b = torch.randn(2, 2)
c = torch.empty(2, 2)
d = torch.matmul(a, b, out=c)
torch.rand(2, 2, out=c)
print(c, d)
""",
    "out=: add and cat into buffers": """
x = torch.ones(3)
y = torch.arange(3.)
buf = torch.empty(3)
torch.add(x, y, out=buf)
joined = torch.empty(6)
torch.cat([x, y], out=joined)
""",
    "out=: reuse one buffer in a loop": """
acc = torch.zeros(4)
tmp = torch.empty(4)
for i in range(3):
    torch.mul(torch.randn(4), 2, out=tmp)
    acc += tmp
""",
    # -- gradcheck ------------------------------------------------------------------------------------------
    "gradcheck on a double-precision function": """
from torch.autograd import gradcheck
inp = torch.randn(4, dtype=torch.double, requires_grad=True)
ok = gradcheck(torch.sigmoid, (inp,), eps=1e-6, atol=1e-4)
print(ok)
""",
    "gradcheck and gradgradcheck on a composite": """
from torch.autograd import gradcheck, gradgradcheck
def f(x):
    return (x.sin() * x.exp()).sum()
x = torch.randn(3, dtype=torch.float64, requires_grad=True)
assert gradcheck(f, (x,))
assert gradgradcheck(f, (x,))
""",
    "gradcheck on F.linear": """
from torch.autograd import gradcheck
inp = (torch.randn(5, 4, dtype=torch.double, requires_grad=True),
       torch.randn(3, 4, dtype=torch.double, requires_grad=True))
test = gradcheck(F.linear, inp, eps=1e-6, atol=1e-4)
print(test)
""",
    # -- torch.func --------------------------------------------------------------------------------------------
    "torch.func.grad of a scalar function": """
from torch.func import grad
x = torch.randn([])
cos_x = grad(lambda x: torch.sin(x))(x)
neg_sin_x = grad(grad(lambda x: torch.sin(x)))(x)
assert torch.allclose(cos_x, x.cos())
""",
    "torch.func.vmap of a dot product": """
from torch.func import vmap
batched_dot = vmap(torch.dot)
x, y = torch.randn(2, 5), torch.randn(2, 5)
print(batched_dot(x, y))
""",
    "torch.func.jacrev and jacfwd agree": """
from torch.func import jacrev, jacfwd
def predict(weight, bias, x):
    return F.linear(x, weight, bias).tanh()
D = 4
weight, bias, x = torch.randn(D, D), torch.randn(D), torch.randn(D)
jac_rev = jacrev(predict, argnums=2)(weight, bias, x)
jac_fwd = jacfwd(predict, argnums=2)(weight, bias, x)
assert torch.allclose(jac_rev, jac_fwd, atol=1e-5)
""",
    "torch.func.hessian": """
from torch.func import hessian
def f(x):
    return x.sin().sum()
x = torch.randn(5)
hess = hessian(f)(x)
print(hess.shape)
""",
    "torch.func.grad with has_aux": """
from torch.func import grad
def loss_fn(x):
    y = x.sin()
    return y.sum(), y
g, aux = grad(loss_fn, has_aux=True)(torch.randn(3))
""",
    "torch.func.functional_call with a module": """
from torch.func import functional_call, grad
model = nn.Linear(3, 1)
params = {k: v.detach() for k, v in model.named_parameters()}
x, t = torch.randn(4, 3), torch.randn(4, 1)
def compute_loss(params, x, t):
    return F.mse_loss(functional_call(model, params, (x,)), t)
grads = grad(compute_loss)(params, x, t)
print({k: g.shape for k, g in grads.items()})
""",
    # -- per-sample gradients --------------------------------------------------------------------------------
    "per-sample gradients with vmap(grad) (the tutorial)": """
from torch.func import functional_call, vmap, grad
model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
params = {k: v.detach() for k, v in model.named_parameters()}
buffers = {k: v.detach() for k, v in model.named_buffers()}
data, targets = torch.randn(6, 10), torch.randint(3, (6,))
def compute_loss(params, buffers, sample, target):
    batch = sample.unsqueeze(0)
    predictions = functional_call(model, (params, buffers), (batch,))
    return F.cross_entropy(predictions, target.unsqueeze(0))
ft_compute_sample_grad = vmap(grad(compute_loss), in_dims=(None, None, 0, 0))
ft_per_sample_grads = ft_compute_sample_grad(params, buffers, data, targets)
""",
    "per-sample gradients with a loop and autograd.grad": """
model = nn.Linear(5, 1)
data, targets = torch.randn(4, 5), torch.randn(4, 1)
per_sample = []
for x, t in zip(data, targets):
    loss = F.mse_loss(model(x), t)
    per_sample.append(torch.autograd.grad(loss, list(model.parameters())))
norms = [torch.stack([g.norm() for g in gs]).norm() for gs in per_sample]
""",
    "per-sample gradients compared with the batch gradient": """
model = nn.Linear(3, 1)
data, targets = torch.randn(4, 3), torch.randn(4, 1)
per = [torch.autograd.grad(F.mse_loss(model(x), t), model.weight)[0] for x, t in zip(data, targets)]
model.zero_grad()
F.mse_loss(model(data), targets).backward()
assert torch.allclose(torch.stack(per).mean(0), model.weight.grad, atol=1e-5)
""",
    # -- forward-mode AD -------------------------------------------------------------------------------------
    "forward_ad: dual numbers and jvp": """
import torch.autograd.forward_ad as fwAD
primal = torch.randn(10, 10)
tangent = torch.randn(10, 10)
def fn(x, y):
    return x ** 2 + y ** 2
with fwAD.dual_level():
    dual_input = fwAD.make_dual(primal, tangent)
    plain_tensor = torch.randn(10, 10)
    dual_output = fn(dual_input, plain_tensor)
    jvp = fwAD.unpack_dual(dual_output).tangent
""",
    "forward_ad with a module": """
import torch.autograd.forward_ad as fwAD
model = nn.Linear(5, 5)
inp = torch.randn(16, 5)
params = {name: p for name, p in model.named_parameters()}
tangents = {name: torch.rand_like(p) for name, p in params.items()}
with fwAD.dual_level():
    for name, p in params.items():
        delattr(model, name)
        setattr(model, name, fwAD.make_dual(p, tangents[name]))
    out = model(inp)
    jvp = fwAD.unpack_dual(out).tangent
""",
    "torch.func.jvp": """
from torch.func import jvp
x = torch.randn(5)
f = lambda x: x * torch.tensor([1., 2., 3., 4., 5.])
_, jvp_out = jvp(f, (x,), (torch.ones(5),))
""",
    # -- torch.autograd.functional ---------------------------------------------------------------------------
    "autograd.functional.jacobian": """
from torch.autograd.functional import jacobian
def exp_reducer(x):
    return x.exp().sum(dim=1)
inputs = torch.rand(2, 2)
J = jacobian(exp_reducer, inputs)
J_graph = jacobian(exp_reducer, inputs, create_graph=True)
""",
    "autograd.functional.hessian": """
from torch.autograd.functional import hessian
def pow_reducer(x):
    return x.pow(3).sum()
inputs = torch.rand(2, 2)
H = hessian(pow_reducer, inputs)
""",
    "autograd.functional.vjp, jvp and hvp": """
from torch.autograd.functional import vjp, jvp, hvp
def f(x):
    return x ** 2
x = torch.randn(3)
v = torch.ones(3)
out, vjp_out = vjp(f, x, v)
out, jvp_out = jvp(f, x, v)
_, hvp_out = hvp(lambda x: (x ** 3).sum(), x, v)
""",
    # -- parametrizations ------------------------------------------------------------------------------------
    "parametrize: a symmetric weight": """
import torch.nn.utils.parametrize as parametrize
class Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(-1, -2)
layer = nn.Linear(3, 3)
parametrize.register_parametrization(layer, "weight", Symmetric())
A = layer.weight
assert torch.allclose(A, A.T)
loss = layer(torch.randn(2, 3)).sum()
loss.backward()
""",
    "parametrize: orthogonal and caching": """
from torch.nn.utils import parametrizations
import torch.nn.utils.parametrize as parametrize
layer = parametrizations.orthogonal(nn.Linear(4, 4))
with parametrize.cached():
    out = layer(torch.randn(2, 4)) + layer(torch.randn(2, 4))
out.sum().backward()
""",
    "parametrize: weight_norm in a training loop": """
from torch.nn.utils.parametrizations import weight_norm
layer = weight_norm(nn.Linear(3, 2))
opt = torch.optim.SGD(layer.parameters(), lr=0.1)
for _ in range(3):
    opt.zero_grad()
    loss = layer(torch.randn(5, 3)).pow(2).mean()
    loss.backward()
    opt.step()
""",
    # -- custom autograd.Function ---------------------------------------------------------------------------
    "custom Function: LegendrePolynomial3 (the tutorial)": """
import math
class LegendrePolynomial3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return 0.5 * (5 * input ** 3 - 3 * input)

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        return grad_output * 1.5 * (5 * input ** 2 - 1)

x = torch.linspace(-math.pi, math.pi, 200)
y = torch.sin(x)
a = torch.full((), 0.0, requires_grad=True)
b = torch.full((), -1.0, requires_grad=True)
c = torch.full((), 0.0, requires_grad=True)
d = torch.full((), 0.3, requires_grad=True)
learning_rate = 5e-6
for t in range(20):
    P3 = LegendrePolynomial3.apply
    y_pred = a + b * P3(c + d * x)
    loss = (y_pred - y).pow(2).sum()
    loss.backward()
    with torch.no_grad():
        a -= learning_rate * a.grad
        b -= learning_rate * b.grad
        c -= learning_rate * c.grad
        d -= learning_rate * d.grad
        a.grad = None
        b.grad = None
        c.grad = None
        d.grad = None
""",
    "custom Function: Exp saving its output": """
class Exp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i):
        result = i.exp()
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        result, = ctx.saved_tensors
        return grad_output * result

x = torch.randn(3, requires_grad=True)
Exp.apply(x).sum().backward()
""",
    "custom Function: MulConstant with a ctx attribute": """
class MulConstant(torch.autograd.Function):
    @staticmethod
    def forward(tensor, constant):
        return tensor * constant

    @staticmethod
    def setup_context(ctx, inputs, output):
        tensor, constant = inputs
        ctx.constant = constant

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.constant, None

x = torch.randn(3, requires_grad=True)
MulConstant.apply(x, 5.0).sum().backward()
""",
    "custom Function: straight-through estimator": """
class RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.round()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output

w = torch.randn(4, requires_grad=True)
q = RoundSTE.apply(w * 3)
loss = (q - 1).pow(2).sum()
loss.backward()
""",
    "custom Function: gradcheck of a custom Function": """
from torch.autograd import gradcheck
class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return 2 * x * g

assert gradcheck(Square.apply, (torch.randn(3, dtype=torch.double, requires_grad=True),))
""",
    "custom Function: mark_non_differentiable indices": """
class SortWithIndices(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        values, idx = x.sort()
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        return values, idx

    @staticmethod
    def backward(ctx, g, _):
        idx, = ctx.saved_tensors
        out = torch.zeros_like(g)
        out[idx] = g
        return out

x = torch.randn(5, requires_grad=True)
vals, idx = SortWithIndices.apply(x)
vals.sum().backward()
""",
    # -- RNN / LSTM with carried state -------------------------------------------------------------------------
    "RNN: truncated BPTT with hidden.detach()": """
rnn = nn.RNN(4, 8, batch_first=True)
head = nn.Linear(8, 1)
opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-2)
hidden = torch.zeros(1, 2, 8)
for chunk in range(4):
    x, y = torch.randn(2, 5, 4), torch.randn(2, 5, 1)
    hidden = hidden.detach()
    opt.zero_grad()
    out, hidden = rnn(x, hidden)
    loss = F.mse_loss(head(out), y)
    loss.backward()
    opt.step()
""",
    "LSTM: repackage_hidden (word_language_model)": """
def repackage_hidden(h):
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)
lstm = nn.LSTM(3, 6, num_layers=2)
decoder = nn.Linear(6, 10)
opt = torch.optim.SGD(list(lstm.parameters()) + list(decoder.parameters()), lr=0.5)
hidden = (torch.zeros(2, 4, 6), torch.zeros(2, 4, 6))
for i in range(3):
    data, targets = torch.randn(7, 4, 3), torch.randint(10, (7 * 4,))
    hidden = repackage_hidden(hidden)
    lstm.zero_grad()
    decoder.zero_grad()
    output, hidden = lstm(data, hidden)
    loss = F.cross_entropy(decoder(output).view(-1, 10), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lstm.parameters(), 0.25)
    opt.step()
""",
    "GRU: char-RNN loop step by step": """
gru = nn.GRUCell(5, 7)
out_layer = nn.Linear(7, 5)
opt = torch.optim.Adam(list(gru.parameters()) + list(out_layer.parameters()), lr=1e-3)
seq = torch.randn(6, 1, 5)
target = torch.randint(5, (6,))
opt.zero_grad()
h = torch.zeros(1, 7)
loss = 0
for t in range(seq.size(0)):
    h = gru(seq[t], h)
    loss = loss + F.cross_entropy(out_layer(h), target[t:t + 1])
loss.backward()
opt.step()
print(loss.item() / seq.size(0))
""",
    "LSTM: sequence classifier with pack_padded_sequence": """
from torch.nn.utils.rnn import pack_padded_sequence
lstm = nn.LSTM(3, 4, batch_first=True)
clf = nn.Linear(4, 2)
x = torch.randn(3, 5, 3)
lengths = torch.tensor([5, 3, 2])
packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True)
_, (h_n, c_n) = lstm(packed)
loss = F.cross_entropy(clf(h_n[-1]), torch.tensor([0, 1, 0]))
loss.backward()
""",
    "LSTM: stateful inference with no_grad": """
lstm = nn.LSTM(2, 3)
state = None
outputs = []
with torch.no_grad():
    for step in range(4):
        out, state = lstm(torch.randn(1, 1, 2), state)
        outputs.append(out.squeeze())
""",
    # -- profiler -----------------------------------------------------------------------------------------------
    "profiler: profile with record_function": """
from torch.profiler import profile, record_function, ProfilerActivity
model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
inputs = torch.randn(4, 8)
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    with record_function("model_inference"):
        model(inputs)
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=3))
""",
    "profiler: a training step inside profile": """
from torch.profiler import profile, ProfilerActivity
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    opt.zero_grad()
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
events = prof.key_averages()
""",
    "profiler: autograd.profiler.profile": """
x = torch.randn(5, 5, requires_grad=True)
with torch.autograd.profiler.profile() as prof:
    for _ in range(3):
        y = x ** 2
        y.backward(torch.ones_like(x))
        x.grad = None
print(len(prof.function_events) > 0)
""",
    # -- learning PyTorch with examples ---------------------------------------------------------------------------
    "examples: polynomial fit with tensors and manual gradients": """
import math
x = torch.linspace(-math.pi, math.pi, 200)
y = torch.sin(x)
a, b, c, d = (torch.randn((), requires_grad=True) for _ in range(4))
learning_rate = 1e-6
for t in range(30):
    y_pred = a + b * x + c * x ** 2 + d * x ** 3
    loss = (y_pred - y).pow(2).sum()
    if t % 10 == 9:
        print(t, loss.item())
    loss.backward()
    with torch.no_grad():
        a -= learning_rate * a.grad
        b -= learning_rate * b.grad
        c -= learning_rate * c.grad
        d -= learning_rate * d.grad
        a.grad = None
        b.grad = None
        c.grad = None
        d.grad = None
""",
    "examples: polynomial fit with nn and a manual update": """
import math
x = torch.linspace(-math.pi, math.pi, 200)
y = torch.sin(x)
p = torch.tensor([1, 2, 3])
xx = x.unsqueeze(-1).pow(p)
model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0, 1))
loss_fn = nn.MSELoss(reduction="sum")
learning_rate = 1e-6
for t in range(30):
    y_pred = model(xx)
    loss = loss_fn(y_pred, y)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= learning_rate * param.grad
linear_layer = model[0]
""",
    "examples: polynomial fit with optim.RMSprop": """
import math
x = torch.linspace(-math.pi, math.pi, 200)
y = torch.sin(x)
xx = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))
model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0, 1))
loss_fn = nn.MSELoss(reduction="sum")
optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
for t in range(30):
    y_pred = model(xx)
    loss = loss_fn(y_pred, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""",
    "examples: custom nn.Module with dynamic control flow": """
import random
class DynamicNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.randn(()))
        self.b = nn.Parameter(torch.randn(()))
        self.e = nn.Parameter(torch.randn(()))

    def forward(self, x):
        y = self.a + self.b * x
        for exp in range(4, random.randint(4, 6)):
            y = y + self.e * x ** exp
        return y

x = torch.linspace(-1, 1, 50)
y = torch.sin(x)
model = DynamicNet()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
for t in range(10):
    loss = F.mse_loss(model(x), y, reduction="sum")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""",
    # -- the autograd blitz -------------------------------------------------------------------------------------------
    "blitz: Q = 3a^3 - b^2 with an external gradient": """
a = torch.tensor([2., 3.], requires_grad=True)
b = torch.tensor([6., 4.], requires_grad=True)
Q = 3 * a ** 3 - b ** 2
external_grad = torch.tensor([1., 1.])
Q.backward(gradient=external_grad)
print(9 * a ** 2 == a.grad)
print(-2 * b == b.grad)
""",
    "blitz: resnet-style freeze and replace the head": """
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10))
for param in model.parameters():
    param.requires_grad = False
model[2] = nn.Linear(16, 4)
optimizer = torch.optim.SGD(model[2].parameters(), lr=1e-2, momentum=0.9)
loss = model(torch.randn(3, 8)).sum()
loss.backward()
optimizer.step()
""",
    "blitz: neural network with net.zero_grad and a random gradient": """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 12)
        self.fc2 = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))

net = Net()
inp = torch.randn(1, 16)
out = net(inp)
net.zero_grad()
out.backward(torch.randn(1, 10))
print(net.fc1.bias.grad)
""",
    "blitz: requires_grad flags and no_grad": """
x = torch.randn(3, requires_grad=True)
print(x.requires_grad)
print((x ** 2).requires_grad)
with torch.no_grad():
    print((x ** 2).requires_grad)
y = x.detach()
print(y.requires_grad)
print(x.eq(y).all())
""",
    "blitz: vector-Jacobian product y.backward(v)": """
x = torch.randn(3, requires_grad=True)
y = x * 2
while y.data.norm() < 1000:
    y = y * 2
v = torch.tensor([0.1, 1.0, 0.0001], dtype=torch.float)
y.backward(v)
print(x.grad)
""",
    # -- everyday training idioms ----------------------------------------------------------------------------------
    "train/eval loop with set_grad_enabled(phase == 'train')": """
model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
X, y = torch.randn(12, 4), torch.randint(2, (12,))
for phase in ["train", "val"]:
    model.train() if phase == "train" else model.eval()
    opt.zero_grad()
    with torch.set_grad_enabled(phase == "train"):
        loss = F.cross_entropy(model(X), y)
        if phase == "train":
            loss.backward()
            opt.step()
""",
    "validation with model.eval() and no_grad, then back to train": """
model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
opt = torch.optim.Adam(model.parameters())
X = torch.randn(10, 4)
model.train()
opt.zero_grad()
model(X).mean().backward()
opt.step()
model.eval()
with torch.no_grad():
    val = model(X).mean().item()
model.train()
""",
    "DataLoader over a TensorDataset": """
from torch.utils.data import DataLoader, TensorDataset
ds = TensorDataset(torch.randn(20, 3), torch.randn(20, 1))
loader = DataLoader(ds, batch_size=5, shuffle=True)
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(2):
    for xb, yb in loader:
        pred = model(xb)
        loss = F.mse_loss(pred, yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
""",
    "gradient accumulation over micro-batches on purpose": """
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
accum = 4
opt.zero_grad()
for i in range(8):
    x, y = torch.randn(2, 3), torch.randn(2, 1)
    loss = F.mse_loss(model(x), y) / accum
    loss.backward()
    if (i + 1) % accum == 0:
        opt.step()
        opt.zero_grad()
""",
    "gradient clipping by norm and by value": """
model = nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    opt.zero_grad()
    loss = model(torch.randn(4, 5)).pow(2).sum()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    nn.utils.clip_grad_value_(model.parameters(), clip_value=0.5)
    opt.step()
""",
    "learning-rate scheduler with an optimizer": """
model = nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
for epoch in range(4):
    opt.zero_grad()
    model(torch.randn(3, 2)).sum().backward()
    opt.step()
    sched.step()
""",
    "weight init with nn.init and a manual fill under no_grad": """
layer = nn.Linear(4, 4)
nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
nn.init.zeros_(layer.bias)
with torch.no_grad():
    layer.weight[0].fill_(0.5)
    layer.bias.add_(0.1)
out = layer(torch.randn(2, 4)).sum()
out.backward()
""",
    "EMA teacher updated under no_grad": """
import copy
student = nn.Linear(3, 3)
teacher = copy.deepcopy(student)
for p in teacher.parameters():
    p.requires_grad_(False)
opt = torch.optim.SGD(student.parameters(), lr=0.1)
for _ in range(3):
    x = torch.randn(4, 3)
    loss = F.mse_loss(student(x), teacher(x).detach() + 0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for pt, ps in zip(teacher.parameters(), student.parameters()):
            pt.mul_(0.99).add_(ps, alpha=0.01)
""",
    "best weights kept with deepcopy of the state_dict": """
import copy
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
best_loss, best_state = float("inf"), None
for epoch in range(3):
    opt.zero_grad()
    loss = model(torch.randn(5, 3)).pow(2).mean()
    loss.backward()
    opt.step()
    if loss.item() < best_loss:
        best_loss = loss.item()
        best_state = copy.deepcopy(model.state_dict())
model.load_state_dict(best_state)
""",
    "save and load a checkpoint to a buffer": """
import io
model = nn.Linear(2, 2)
opt = torch.optim.Adam(model.parameters())
buf = io.BytesIO()
torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
buf.seek(0)
ckpt = torch.load(buf)
model.load_state_dict(ckpt["model"])
opt.load_state_dict(ckpt["opt"])
""",
    "activation checkpointing": """
from torch.utils.checkpoint import checkpoint
block = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
x = torch.randn(3, 6, requires_grad=True)
y = checkpoint(block, x, use_reentrant=False)
y.sum().backward()
""",
    "autocast on CPU with bfloat16": """
model = nn.Linear(8, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(4, 8)
with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
    out = model(x)
    loss = out.float().pow(2).mean()
opt.zero_grad()
loss.backward()
opt.step()
""",
    "anomaly detection around a training step": """
model = nn.Linear(3, 1)
with torch.autograd.set_detect_anomaly(True):
    loss = model(torch.randn(2, 3)).sum()
    loss.backward()
""",
    # -- hooks and gradients of intermediates --------------------------------------------------------------------
    "tensor hook that prints and scales a gradient": """
x = torch.randn(3, requires_grad=True)
y = x * 2
y.register_hook(lambda grad: print("grad of y:", grad))
h = x.register_hook(lambda grad: grad * 0.5)
y.sum().backward()
h.remove()
""",
    "retain_grad on an intermediate": """
x = torch.randn(4, requires_grad=True)
hidden = x.tanh()
hidden.retain_grad()
out = (hidden ** 2).sum()
out.backward()
print(hidden.grad, x.grad)
""",
    "module forward and full backward hooks": """
activations, grads = {}, {}
model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
def save_act(name):
    def hook(module, inp, out):
        activations[name] = out.detach()
    return hook
def save_grad(name):
    def hook(module, grad_in, grad_out):
        grads[name] = grad_out[0].detach()
    return hook
model[0].register_forward_hook(save_act("fc1"))
model[2].register_full_backward_hook(save_grad("fc2"))  # Grad-CAM style: a layer whose input requires grad
model(torch.randn(2, 3)).sum().backward()
""",
    "optimizer step in a post-accumulate-grad hook": """
model = nn.Linear(3, 2)
optimizers = {p: torch.optim.SGD([p], lr=0.1) for p in model.parameters()}
def step_hook(p):
    optimizers[p].step()
    optimizers[p].zero_grad()
for p in model.parameters():
    p.register_post_accumulate_grad_hook(step_hook)
for _ in range(3):
    model(torch.randn(4, 3)).sum().backward()
""",
    # -- higher order --------------------------------------------------------------------------------------------
    "gradient penalty (WGAN-GP) with create_graph": """
critic = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
real, fake = torch.randn(4, 2), torch.randn(4, 2)
alpha = torch.rand(4, 1)
interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
out = critic(interp)
grads = torch.autograd.grad(out, interp, grad_outputs=torch.ones_like(out), create_graph=True)[0]
penalty = ((grads.norm(2, dim=1) - 1) ** 2).mean()
loss = critic(fake).mean() - critic(real).mean() + 10 * penalty
opt.zero_grad()
loss.backward()
opt.step()
""",
    "second derivative with autograd.grad twice": """
x = torch.tensor(2.0, requires_grad=True)
y = x ** 3
dy_dx, = torch.autograd.grad(y, x, create_graph=True)
d2y_dx2, = torch.autograd.grad(dy_dx, x)
print(dy_dx.item(), d2y_dx2.item())
""",
    "MAML-style inner step with create_graph": """
model = nn.Linear(2, 1)
x, y = torch.randn(4, 2), torch.randn(4, 1)
inner_loss = F.mse_loss(model(x), y)
grads = torch.autograd.grad(inner_loss, model.parameters(), create_graph=True)
fast = [p - 0.1 * g for p, g in zip(model.parameters(), grads)]
outer_loss = F.mse_loss(F.linear(x, fast[0], fast[1]), y)
outer_loss.backward()
""",
    # -- classic old-style code that still works -----------------------------------------------------------------
    "old-style update through .data": """
w = torch.randn(3, requires_grad=True)
x, y = torch.randn(5, 3), torch.randn(5)
for i in range(3):
    loss = ((x @ w - y) ** 2).mean()
    loss.backward()
    w.data -= 0.1 * w.grad.data
    w.grad.data.zero_()
""",
    "torch.no_grad as a decorator for evaluation": """
model = nn.Linear(3, 2)
@torch.no_grad()
def evaluate(model, x):
    return model(x).argmax(1)
preds = evaluate(model, torch.randn(4, 3))
""",
    "inference_mode for a prediction": """
model = nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1))
with torch.inference_mode():
    probs = model(torch.randn(2, 3))
print(probs.sum(1))
""",
}
