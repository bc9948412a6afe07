#include <iostream>
int main() { std::cout << "lic\n"; }
