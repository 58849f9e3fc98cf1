NAT_DARTS = Genotype(
    normal=[('sep_conv_3x3', 0, 2), ('sep_conv_3x3', 1, 2)], normal_concat=range(2, 3),
    reduce=[('none', 0), ('skip_connect', 1)], reduce_concat=(2,))  # comment
