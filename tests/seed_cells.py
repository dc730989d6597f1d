"""The seed tutorial's code cells (tests/data/seed_tutorial.txt), in order.

Keyed by the tutorial's own In[n] numbers; the closing three cells had none and
are numbered 90-92 here. Kept as data so tests run the exact code users meet.
"""

from __future__ import annotations

SEED_CELLS: dict[int, str] = {
    1: "# imports: \nimport torch\nimport numpy as np\nimport matplotlib.pyplot as plt\ntorch.manual_seed(0);",
    2: ("# Create a tensor x from a list: [[1.,2.],[3.,4.]]\nx = torch.tensor([[1.,2.],[3.,4.]])\n"
        "#----------------------------------------------\nprint(x)"),
    3: ("# Create a tensor x from numpy array: np.array([[1.,2.],[3.,4.]])\narr = np.array([[1.,2.],[3.,4.]])\n"
        "x = torch.tensor(arr)\n#----------------------------------------------\nprint(x)"),
    4: "# Create an all-zeros 3x3 tensor\nx ="
        " torch.zeros(3,3)\n#----------------------------------------------\nprint(x)",
    5: ("# Create a random 3x3 tensor with entries in [0,1]\nx = torch.rand(3,3)\n"
        "#----------------------------------------------\nprint(x)"),
    6: "# Access all rows and first two columns of x:\ny ="
        " x[:,0:2]\n#----------------------------------------------\nprint(y)",
    7: ("# Access all rows and first and third columns of x:\ny = x[:,[0,2]]\n"
        "#----------------------------------------------\nprint(y)"),
    8: "# Convert x to numpy\narr ="
        " x.numpy()\n#----------------------------------------------\nprint(arr)\nprint(type(arr))",
    9: "x = torch.tensor([[1.,2.],[3.,4.]])\ny = 0.1*x\nprint('x: ', x)\nprint('y: ', y)",
    10: "# add x & y\nx+y",
    11: "# Element-wise multiply x and y:\n# NOT matrix multiplication\nx*y",
    12: "# Element-wise divide x and y:\nx/y",
    13: ("# Shorthand for matrix multiplications:\nx = torch.rand(10,3)\ny = torch.rand(3,5)\n"
         "#----------------------------------------------\nz = x @ y\n\n\n"
         "#----------------------------------------------\nprint(z)\nprint(z.shape)"),
    14: ("# Create a tensor x with entries [1,2,3,4]\nx = torch.tensor([1,2,3,4])\n\n# Assign x to z\nz = x\n\n"
         "# modify z[0] to 5\nz[0] = 5\n\n#----------------------------------------------\nprint('z: ',"
         " z)\nprint('x: ',x)"),
    15: ("# Create a tensor x with entries [1,2,3,4]\nx = torch.tensor([1,2,3,4])\n\n# Clone x to z\nz = x.clone()\n\n"
         "# modify z[0] to 5\nz[0] = 5\n#----------------------------------------------\nprint('z: ',"
         " z)\nprint('x: ',x)"),
    16: ("# Create a tensor x with entries [1,2,3,4]\nx = torch.tensor([1,2,3,4])\n\n# Add 1 to x and assign to z\n"
         "z = x+1\n\n#----------------------------------------------\nprint('z: ', z)\nprint('x: ',x)"),
    17: ("# Tensors WITHOUT gradient tracking \nx = torch.tensor([5.])\ny = torch.tensor([7.])\n"
         "#----------------------------------------------\nprint('x: ',x)\nprint('y: ',y)"),
    18: ("# Tensors WITH gradient tracking \nx = torch.tensor([5.], requires_grad = True)\ny = torch.tensor([7.])\n"
         "y.requires_grad = True\n\n#----------------------------------------------\nprint('x: ',x)\nprint('y: ',y)\n"
         "print('Notice the \"requires_grad\" that has appeared in the tensors')"),
    19: ("# Create intermediate variables\nvar1 = 2*x\nvar2 = x+y\n#----------------------------------------------\n"
         "print('var1: ',var1)\nprint('var2: ',var2)\n"
         "print('\\nNotice the \"grad_fn\" that has appeared in the tensors and tells which function was used to "
         "achieve this variable')"),
    20: "# Create final variable: z\nz = var2 - var1\n#----------------------------------------------\nprint(z)",
    21: ("# Auto-differentiate: goes backward in the computational graph and computes all the gradients\n"
         "z.backward()"),
    22: ("# Get the gradients. Note that the gradients of z are stored in \".grad\" of respective variables \n"
         "dz_dx = x.grad\ndz_dy = y.grad\n#----------------------------------------------\n"
         "print('dz_dx: ', dz_dx)\nprint('dz_dy: ', dz_dy)"),
    23: ("# Create scalar c using random tensors a and b. Remember to set requires_grad = True to enable gradient "
         "tracking\na = torch.rand(10,3, requires_grad = True)\nb = torch.rand(3,5)\nb.requires_grad = True\n\n"
         "c = torch.norm(torch.sin(a) @ torch.pow(b,2))\n#----------------------------------------------\n"
         "print('c:',c)"),
    24: ("# Use .backward() to compute gradients of c relative to a and b\nc.backward()\n"
         "#----------------------------------------------\nprint('dc/da:',a.grad)\nprint('dc/db:',b.grad)"),
    32: "print(c)",
    33: "# Detach c from the graph and print:\nprint(c.detach())",
    90: "a = torch.tensor([1.,2.,3.],requires_grad=True)\nb = a**2\nprint(b)",
    91: "# Detach -> numpy -> back to torch tensor\nb = torch.tensor(b.detach().numpy())\nprint(b)",
    92: "# Try calling backward()\nb.backward()",
}
